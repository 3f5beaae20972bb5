"""The report store and outbox on SQLite and PostgreSQL: versions, immutability, idempotency,
leases and backoff."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError

from slideserver.db.engine import make_engine, now
from slideserver.reports.model import InvalidReport, parse_body
from slideserver.reports.outbox import (
    DELIVERED,
    FAILING,
    GIVEN_UP,
    PENDING,
    DeliveryFailed,
    Outbox,
    backoff,
)
from slideserver.reports.schema import report_outbox
from slideserver.reports.store import (
    ReportChanged,
    ReportNotSigned,
    ReportSigned,
    ReportStore,
)

PDF = b"%PDF-1.4 stand-in bytes for the store"
TARGETS = ("fhir", "hl7v2")


@pytest.fixture
def store(database_url: str) -> Iterator[ReportStore]:
    engine = make_engine(database_url)
    yield ReportStore(engine)
    engine.dispose()


def _draft(store: ReportStore, key: str | None = None) -> str:
    body = parse_body({"diagnosis": "Invasive ductal carcinoma", "synoptic": {"Grade": "2"}})
    version, _ = store.create("S24-01234", body, "token:dr-a", key)
    return version.report_id


def test_a_new_report_is_a_draft_at_version_1(store: ReportStore) -> None:
    report = store.get(_draft(store))
    assert (report.version, report.status, report.revision) == (1, "draft", 1)
    assert report.body.synoptic == (("Grade", "2"),)
    assert report.deliveries == ()


def test_a_retried_creation_returns_the_first_report(store: ReportStore) -> None:
    first = _draft(store, "client-key-1")
    again, created = store.create("S24-01234", parse_body({}), "token:dr-a", "client-key-1")
    assert not created and again.report_id == first
    assert store.count() == 1


def test_an_edit_needs_the_current_etag(store: ReportStore) -> None:
    report = store.get(_draft(store))
    edited = store.update_draft(report.report_id, parse_body({"diagnosis": "DCIS"}), report.etag)
    assert edited.revision == 2 and edited.body.diagnosis == "DCIS"
    with pytest.raises(ReportChanged):  # a second editor still holding the first ETag
        store.update_draft(report.report_id, parse_body({"diagnosis": "lost"}), report.etag)
    assert store.get(report.report_id).body.diagnosis == "DCIS"


def test_signing_makes_a_final_version_and_queues_every_target(store: ReportStore) -> None:
    report = store.get(_draft(store))
    signed = store.sign(report.report_id, report.revision, "token:dr-a", now(), PDF, TARGETS)
    assert (signed.version, signed.status, signed.signer) == (1, "final", "token:dr-a")
    assert {(d.target, d.state) for d in signed.deliveries} == {
        ("fhir", PENDING),
        ("hl7v2", PENDING),
    }
    assert store.pdf(report.report_id, 1) == PDF


def test_a_signed_version_cannot_be_edited_or_signed_again(store: ReportStore) -> None:
    report = store.get(_draft(store))
    signed = store.sign(report.report_id, report.revision, "token:dr-a", now(), PDF, TARGETS)
    with pytest.raises(ReportSigned):
        store.update_draft(report.report_id, parse_body({"diagnosis": "x"}), signed.etag)
    with pytest.raises(ReportSigned):
        store.sign(report.report_id, signed.revision, "token:dr-a", now(), PDF, TARGETS)


def test_the_database_refuses_to_change_a_signed_version(store: ReportStore) -> None:
    report = store.get(_draft(store))
    store.sign(report.report_id, report.revision, "token:dr-a", now(), PDF, ())
    with pytest.raises(DBAPIError), store.writer.begin() as conn:
        conn.execute(text("UPDATE report_versions SET body = '{}'"))
    with pytest.raises(DBAPIError), store.writer.begin() as conn:
        conn.execute(text("DELETE FROM report_versions"))
    assert store.get(report.report_id).body.diagnosis == "Invasive ductal carcinoma"


def test_signing_a_draft_changed_meanwhile_is_refused(store: ReportStore) -> None:
    report = store.get(_draft(store))
    store.update_draft(report.report_id, parse_body({"diagnosis": "newer"}), report.etag)
    with pytest.raises(ReportChanged):
        store.sign(report.report_id, report.revision, "token:dr-a", now(), PDF, TARGETS)


def test_an_amendment_adds_a_version_and_keeps_the_earlier(store: ReportStore) -> None:
    report = store.get(_draft(store))
    store.sign(report.report_id, report.revision, "token:dr-a", now(), PDF, TARGETS)
    body = parse_body({"diagnosis": "Invasive lobular carcinoma"})
    amended = store.amend(
        report.report_id, 1, "corrected", body, "wrong type", "token:dr-b", now(), PDF, TARGETS
    )
    assert (amended.version, amended.status, amended.signer) == (2, "corrected", "token:dr-b")
    assert amended.versions == ((1, "final"), (2, "corrected"))
    first = store.get(report.report_id, 1)
    assert first.status == "final" and first.body.diagnosis == "Invasive ductal carcinoma"
    with pytest.raises(ReportChanged):  # amending from a version that is no longer the newest
        store.amend(report.report_id, 1, "amended", body, "again", "token:dr-b", now(), PDF, ())


def test_a_draft_cannot_be_amended(store: ReportStore) -> None:
    report_id = _draft(store)
    with pytest.raises(ReportNotSigned):
        store.amend(report_id, 1, "amended", parse_body({}), "why", "token:dr-a", now(), PDF, ())


@pytest.mark.parametrize(
    "body",
    [
        {"diagnosis": 5},
        {"synoptic": {"Grade": 2}},
        {"figures": [{"slide_id": "s", "region": {"x": 0, "y": 0, "width": 0, "height": 5}}]},
        {"figures": [{"slide_id": "s", "region": {"x": -1, "y": 0, "width": 5, "height": 5}}]},
        {"figures": [{"region": {"x": 0, "y": 0, "width": 5, "height": 5}}]},
        ["not", "an", "object"],
    ],
)
def test_malformed_bodies_are_refused(body: object) -> None:
    with pytest.raises(InvalidReport):
        parse_body(body)


# --- the outbox ---


def _signed(store: ReportStore) -> str:
    report = store.get(_draft(store))
    store.sign(report.report_id, report.revision, "token:dr-a", now(), PDF, TARGETS)
    return report.report_id


def test_a_leased_row_is_not_claimed_by_another_worker(store: ReportStore) -> None:
    _signed(store)
    outbox = Outbox(store.engine, store.writer)
    assert len(outbox.claim("worker-a", lease=60)) == 2
    assert outbox.claim("worker-b", lease=60) == []


def test_a_row_whose_worker_died_is_claimed_again_when_its_lease_ends(store: ReportStore) -> None:
    _signed(store)
    outbox = Outbox(store.engine, store.writer)
    crashed = outbox.claim("worker-a", lease=-1)  # claimed, never settled, lease already over
    again = outbox.claim("worker-b", lease=60)
    assert {c.id for c in again} == {c.id for c in crashed}
    # The dead worker's late answer does not overwrite the row it no longer holds.
    outbox.settle(crashed[0], "worker-a", None, "late", 1.0, 5)
    assert outbox.counts() == {PENDING: 2}
    outbox.settle(again[0], "worker-b", None, "ok", 1.0, 5)
    assert outbox.counts() == {PENDING: 1, DELIVERED: 1}


def test_failures_back_off_then_give_up(store: ReportStore) -> None:
    report_id = _signed(store)
    outbox = Outbox(store.engine, store.writer)
    claim = next(c for c in outbox.claim("w", 60) if c.target == "hl7v2")
    outbox.settle(claim, "w", DeliveryFailed("the LIS answered AE"), "", 10.0, 2)
    row = store.get(report_id).deliveries[1]
    assert (row.target, row.state, row.detail, row.attempts) == (
        "hl7v2",
        FAILING,
        "the LIS answered AE",
        1,
    )
    assert all(c.target != "hl7v2" for c in outbox.claim("w", 60))  # not due for 10 s
    with store.writer.begin() as conn:  # let the backoff pass
        conn.execute(update(report_outbox).values(next_at=now(), lease_until=None))
    claim = next(c for c in outbox.claim("w", 60) if c.target == "hl7v2")
    outbox.settle(claim, "w", DeliveryFailed("the LIS answered AE"), "", 10.0, 2)
    assert store.get(report_id).deliveries[1].state == GIVEN_UP


def test_an_admin_retry_makes_given_up_deliveries_due(store: ReportStore) -> None:
    report_id = _signed(store)
    outbox = Outbox(store.engine, store.writer)
    for claim in outbox.claim("w", 60):
        outbox.settle(claim, "w", DeliveryFailed("refused", permanent=True), "", 1.0, 5)
    assert outbox.counts() == {GIVEN_UP: 2}
    assert outbox.retry(report_id) == 2
    assert outbox.counts() == {PENDING: 2}
    assert len(outbox.claim("w", 60)) == 2


def test_backoff_doubles_up_to_an_hour() -> None:
    assert [backoff(n, 5.0) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert backoff(40, 5.0) == 3600.0
