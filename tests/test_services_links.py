"""The link service over the real SQL catalog (SQLite), and the one error without case links."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import select

from slideserver.api.errors import error_status
from slideserver.catalog.cases import LinkStore
from slideserver.catalog.memory import MemoryCatalog
from slideserver.catalog.schema import inbound_messages
from slideserver.lis.json_orders import parse_case_order
from slideserver.readers.registry import default_registry
from slideserver.services.links import LinkService, LinksUnavailable, accession_candidates
from tests.fixtures.lis.support import JANE, read, sql_store

ORDER = read("json_order.json")


def run(call: Callable[[], Awaitable[Any]]) -> Any:
    return anyio.run(call)


@pytest.fixture
def catalog(tmp_path: Path, tiny_slides: Any) -> Iterator[Any]:
    """The SQL catalog over one scanned slide whose label barcode the sample order names."""
    tiny_slides("scan 1.svs", barcode="S24-01234-A1-1")
    store = sql_store(tmp_path, tiny_slides.root)
    yield store
    store.close()


@pytest.fixture
def links(catalog: Any) -> LinkService:
    return LinkService(catalog)


def messages(catalog: Any) -> list[tuple[str, str, str]]:
    """The kept inbound messages: (source, status, detail)."""
    query = select(inbound_messages).order_by(inbound_messages.c.id)
    with catalog.engine.connect() as conn:
        return [(r.source, r.status, r.detail) for r in conn.execute(query)]


def test_the_sql_catalog_is_a_link_store(catalog: Any, links: LinkService) -> None:
    assert isinstance(catalog, LinkStore)
    assert links.available
    assert links.require() is links


def test_apply_order_creates_the_case_and_keeps_the_message(
    catalog: Any, links: LinkService
) -> None:
    result = run(lambda: links.apply_order(parse_case_order(json.loads(ORDER)), ORDER))
    assert result.created and result.changed
    assert messages(catalog) == [("json", "accepted", "case created; 1 slide(s) linked")]


def test_a_repeated_order_changes_nothing(catalog: Any, links: LinkService) -> None:
    order = parse_case_order(json.loads(ORDER))
    run(lambda: links.apply_order(order, ORDER))
    again = run(lambda: links.apply_order(order, ORDER))
    assert not again.created and not again.changed
    assert messages(catalog)[-1] == ("json", "accepted", "no change (already applied)")


def test_reject_keeps_the_message_with_why(catalog: Any, links: LinkService) -> None:
    run(lambda: links.reject("fhir", "{", "not JSON"))
    assert messages(catalog) == [("fhir", "rejected", "not JSON")]


def test_view_a_case_with_its_scanned_slides(links: LinkService) -> None:
    run(lambda: links.apply_order(parse_case_order(json.loads(ORDER)), ORDER))
    found = run(lambda: links.case_with_slides("S24-01234"))
    assert found is not None and found.linked
    assert found.case.patient == JANE
    assert [b.id for b in found.case.specimens[0].blocks] == ["A1", "A2"]
    assert [r.name for r in found.records] == ["scan 1.svs"]
    assert [r.id for r in found.records] == [s.id for s in found.case.slides]
    assert found.case.expected_barcodes == ("S24-01234-A2-1",)


def test_opening_a_case_takes_one_database_connection(catalog: Any, links: LinkService) -> None:
    """Case, slide records and the LIS flag come from one check-out (each costs round trips)."""
    from sqlalchemy import event

    run(lambda: links.apply_order(parse_case_order(json.loads(ORDER)), ORDER))
    checkouts: list[object] = []
    listener = partial(lambda seen, *_: seen.append(1), checkouts)
    event.listen(catalog.engine, "engine_connect", listener)
    try:
        linked = run(lambda: links.case_with_slides("S24-01234"))
        unlinked = run(lambda: links.case_with_slides("S24-99999"))
    finally:
        event.remove(catalog.engine, "engine_connect", listener)
    assert linked is not None and linked.linked and len(linked.records) == 1
    assert unlinked is None
    assert len(checkouts) == 2


def test_an_unknown_case_is_none(links: LinkService) -> None:
    assert run(lambda: links.case_with_slides("S24-99999")) is None
    assert run(lambda: links.case("S24-99999")) is None


def test_patient_and_their_cases_by_mrn(links: LinkService) -> None:
    run(lambda: links.apply_order(parse_case_order(json.loads(ORDER)), ORDER))
    assert run(lambda: links.patient("MRN-0012345")) == JANE
    assert [c.accession for c in run(lambda: links.cases_of_patient("MRN-0012345"))] == [
        "S24-01234"
    ]
    assert run(lambda: links.patient("MRN-NOBODY")) is None


def test_case_of_a_slide_or_block_container(links: LinkService) -> None:
    run(lambda: links.apply_order(parse_case_order(json.loads(ORDER)), ORDER))
    for container in ("S24-01234-A1-1", "S24-01234-A2-1"):
        case = run(partial(links.case_of_container, container))
        assert case is not None and case.accession == "S24-01234", container
    assert run(lambda: links.case_of_container("S24-77777-A1-1")) is None


def test_accession_candidates_are_the_container_id_prefixes() -> None:
    assert accession_candidates("S24-01234-A1-1") == ["S24-01234-A1", "S24-01234"]
    assert accession_candidates("A1") == []


def test_hl7v2_order_is_applied_and_acknowledged(catalog: Any, links: LinkService) -> None:
    reply = run(lambda: links.handle_hl7v2(read("oml_o21.hl7")))
    assert reply.code == "AA" and reply.detail == "case created; 1 slide(s) linked"
    assert run(lambda: links.case("S24-01234")) is not None
    assert messages(catalog) == [("hl7v2", "AA", "case created; 1 slide(s) linked")]
    assert "MSA|AA|MSG-OML-0001|" in run(lambda: links.hl7v2_ack(read("oml_o21.hl7")))


def test_conflicts_start_empty(links: LinkService) -> None:
    assert run(lambda: links.conflicts("open", 10, 0)) == []


# --- a catalog without case links: one error, everywhere ---


@pytest.fixture
def no_links(tmp_path: Path) -> LinkService:
    return LinkService(MemoryCatalog([tmp_path], default_registry()))


CALLS: dict[str, Callable[[LinkService], Awaitable[Any]]] = {
    "apply_order": lambda s: s.apply_order(parse_case_order(json.loads(ORDER)), ORDER),
    "reject": lambda s: s.reject("json", "{", "not JSON"),
    "handle_hl7v2": lambda s: s.handle_hl7v2(read("oml_o21.hl7")),
    "case": lambda s: s.case("S24-01234"),
    "case_with_slides": lambda s: s.case_with_slides("S24-01234"),
    "cases_of_patient": lambda s: s.cases_of_patient("MRN-0012345"),
    "patient": lambda s: s.patient("MRN-0012345"),
    "case_of_container": lambda s: s.case_of_container("S24-01234-A1-1"),
    "slide": lambda s: s.slide("abc"),
    "conflicts": lambda s: s.conflicts("open", 10, 0),
}


def test_the_memory_catalog_is_not_a_link_store(no_links: LinkService) -> None:
    assert not isinstance(no_links.catalog, LinkStore)
    assert not no_links.available
    with pytest.raises(LinksUnavailable):
        no_links.require()


@pytest.mark.parametrize("name", sorted(CALLS))
def test_without_links_every_call_raises_links_unavailable(
    no_links: LinkService, name: str
) -> None:
    with pytest.raises(LinksUnavailable) as caught:
        run(lambda: CALLS[name](no_links))
    assert caught.value.code == "links_unavailable"
    assert error_status(caught.value) == 503


def test_without_links_hl7v2_is_answered_ae(no_links: LinkService) -> None:
    ack = run(lambda: no_links.hl7v2_ack(read("oml_o21.hl7")))
    assert "MSA|AE|MSG-OML-0001|this server's catalog keeps no case links" in ack
