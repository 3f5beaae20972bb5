"""HL7 v2: OML^O21, ORM^O01, ADT^A08 and ADT^A40 parsed field by field; ACKs; never a crash."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import hl7
import pytest

from slideserver.catalog.cases import CaseOrder, PatientIn, SlideIn
from slideserver.lis.hl7v2 import (
    Hl7Error,
    PatientMerge,
    build_ack,
    handle_message,
    parse_message,
    read_header,
)
from slideserver.lis.policy import AccessionPolicy
from tests.fixtures.lis.support import (
    EPIC,
    JANE_MR,
    LAB,
    SAMPLE_SPECIMENS,
    RecordingStore,
    read,
    sql_lis_client,
)


def replace_segment(message: str, name: str, new: str | None) -> str:
    """Replace (or drop, with ``None``) every segment called ``name``."""
    out = []
    for seg in message.split("\r"):
        if seg.startswith(name + "|"):
            if new is not None:
                out.append(new)
        elif seg:
            out.append(seg)
    return "\r".join(out) + "\r"


def only_order(message: str) -> CaseOrder:
    """The one order of an OML/ORM message."""
    content = parse_message(message).content
    assert isinstance(content, tuple) and len(content) == 1
    return content[0]


def error_of(message: str) -> Hl7Error:
    with pytest.raises(Hl7Error) as caught:
        parse_message(message)
    return caught.value


# --- orders ---


def test_oml_o21_every_field() -> None:
    parsed = parse_message(read("oml_o21.hl7"))
    assert parsed.header.message_type == "OML^O21"
    assert parsed.header.control_id == "MSG-OML-0001"
    assert parsed.header.sending_application == "COPATH"
    assert parsed.content == (
        CaseOrder(
            accession="S24-01234",
            accession_issuer=LAB,
            patient=JANE_MR,
            specimens=SAMPLE_SPECIMENS,
            source="hl7v2",
            message_id="COPATH:MSG-OML-0001",
            placer="ORD-778812",
            placer_issuer=EPIC,
            filler="S24-01234",
            filler_issuer=LAB,
        ),
    )


def test_orm_o01_every_field() -> None:
    parsed = parse_message(read("orm_o01.hl7"))
    assert parsed.header.message_type == "ORM^O01"
    assert parsed.content == (
        CaseOrder(
            accession="S24-01234",
            accession_issuer=LAB,
            patient=JANE_MR,
            specimens=(),
            source="hl7v2",
            message_id="EPIC:MSG-ORM-0001",
            placer="ORD-778812",
            placer_issuer=EPIC,
            filler="S24-01234",
            filler_issuer=LAB,
        ),
    )


def test_newline_separated_and_mllp_wrapped_input_is_accepted() -> None:
    wrapped = "\x0b" + read("orm_o01.hl7").replace("\r", "\r\n") + "\x1c\r"
    assert only_order(wrapped).accession == "S24-01234"


@pytest.mark.parametrize(
    ("orc", "obr", "placer", "filler"),
    [
        ("ORC|NW|P1^EPIC|F1^LAB", "OBR|1|P2^EPIC|F2^LAB", ("P1", "EPIC"), ("F1", "LAB")),
        ("ORC|NW|P1^EPIC|", "OBR|1|P2^EPIC|F2^LAB", ("P1", "EPIC"), ("F2", "LAB")),
        ("ORC|NW||", "OBR|1|P2^EPIC|", ("P2", "EPIC"), ("", "")),
    ],
)
def test_order_numbers_orc_first_then_obr(
    orc: str, obr: str, placer: tuple[str, str], filler: tuple[str, str]
) -> None:
    message = replace_segment(replace_segment(read("orm_o01.hl7"), "ORC", orc), "OBR", obr)
    order = only_order(message)
    assert (order.placer, order.placer_issuer) == placer
    assert (order.filler, order.filler_issuer) == filler


def test_accession_is_the_filler_number_by_default() -> None:
    message = replace_segment(read("orm_o01.hl7"), "ORC", "ORC|NW|P1^EPIC|F1^LAB")
    assert (only_order(message).accession, only_order(message).accession_issuer) == ("F1", "LAB")


def test_accession_is_the_placer_number_for_a_placer_sender() -> None:
    message = replace_segment(read("orm_o01.hl7"), "ORC", "ORC|NW|P1^EPIC|F1^LAB")
    policy = AccessionPolicy.parse("filler,EPIC=placer")
    order = parse_message(message, policy).content
    assert isinstance(order, tuple)
    assert (order[0].accession, order[0].accession_issuer) == ("P1", "EPIC")


def test_missing_accession_is_pending_never_the_other_number() -> None:
    message = replace_segment(
        replace_segment(read("orm_o01.hl7"), "ORC", "ORC|NW|P1^EPIC|"), "OBR", "OBR|1|P1^EPIC|"
    )
    order = only_order(message)
    assert (order.accession, order.placer, order.filler) == ("", "P1", "")


def test_missing_accession_is_refused_when_so_configured() -> None:
    message = replace_segment(
        replace_segment(read("orm_o01.hl7"), "ORC", "ORC|NW|P1^EPIC|"), "OBR", "OBR|1|P1^EPIC|"
    )
    with pytest.raises(Hl7Error) as caught:
        parse_message(message, AccessionPolicy.parse("filler", "refuse"))
    error = caught.value
    assert (error.ack_code, error.code, error.location) == ("AE", 101, "ORC^1^3")
    assert "filler order number" in error.reason


def test_hd_universal_id_is_the_issuer() -> None:
    message = replace_segment(read("orm_o01.hl7"), "ORC", "ORC|NW|P1^EPIC|F1^LAB^1.2.3^ISO")
    assert only_order(message).accession_issuer == "urn:oid:1.2.3"


def test_no_order_number_is_an_error() -> None:
    message = replace_segment(replace_segment(read("orm_o01.hl7"), "ORC", "ORC|NW"), "OBR", "OBR|1")
    error = error_of(message)
    assert (error.ack_code, error.code, error.location) == ("AE", 101, "ORC^1^2")
    assert "no placer (ORC-2/OBR-2) or filler (ORC-3/OBR-3) number" in error.reason


def test_pid3_prefers_the_mr_repetition() -> None:
    pid = "PID|1||999-99-9999^^^SSA^SS~MRN-0012345^^^HOSP^MR||DOE^JANE||19610412|F"
    order = only_order(replace_segment(read("orm_o01.hl7"), "PID", pid))
    assert isinstance(order, CaseOrder)
    assert (order.patient.identifier, order.patient.issuer) == ("MRN-0012345", "HOSP")
    pid = "PID|1||4711^^^CLINIC||DOE^JANE"
    order = only_order(replace_segment(read("orm_o01.hl7"), "PID", pid))
    assert isinstance(order, CaseOrder)
    assert order.patient == PatientIn("4711", "CLINIC", "DOE^JANE")


def test_escaped_values_are_unescaped() -> None:
    pid = r"PID|1||MRN-0012345^^^HOSP^MR||O\T\BRIEN^JANE||19610412|F"
    order = only_order(replace_segment(read("orm_o01.hl7"), "PID", pid))
    assert isinstance(order, CaseOrder)
    assert order.patient.name == "O&BRIEN^JANE"


@pytest.mark.parametrize(
    ("pid", "ack", "code", "location"),
    [
        (None, "AE", 101, "PID^1"),
        ("PID|1||^^^HOSP^MR||DOE^JANE", "AE", 101, "PID^1^3"),
        ("PID|1||MRN-0012345^^^HOSP^MR||DOE^JANE||19611345|F", "AE", 102, "PID^1^7"),
        ("PID|1||MRN-0012345^^^HOSP^MR||DOE^JANE||19610412|Q", "AE", 102, "PID^1^8"),
    ],
)
def test_patient_errors(pid: str | None, ack: str, code: int, location: str) -> None:
    error = error_of(replace_segment(read("oml_o21.hl7"), "PID", pid))
    assert (error.ack_code, error.code, error.location) == (ack, code, location)


def test_specimen_errors() -> None:
    oml = read("oml_o21.hl7")
    orphan = oml.replace("SPM|2|A1&LAB|A&LAB|", "SPM|2|A1&LAB|Z&LAB|")
    assert "parent 'Z' is not an SPM" in error_of(orphan).reason
    twice = oml.replace("SPM|4|A2&LAB|", "SPM|4|A1&LAB|")
    assert "'A1' appears twice" in error_of(twice).reason
    deep = oml.rstrip("\r") + "\rSPM|6|X&LAB|A1-1&LAB|TISS\r"
    error = error_of(deep)
    assert "too deep" in error.reason
    assert error.location == "SPM^6^3"
    no_id = oml.replace("SPM|1|A&LAB|", "SPM|1||")
    assert error_of(no_id).location == "SPM^1^2"
    same_barcode = oml.replace("SAC|||S24-01234-A2-1", "SAC|||S24-01234-A1-1")
    assert "appears more than once" in error_of(same_barcode).reason


def test_slide_without_sac_uses_its_specimen_id() -> None:
    oml = read("oml_o21.hl7").replace("SAC|||S24-01234-A1-1\r", "")
    order = only_order(oml)
    assert isinstance(order, CaseOrder)
    assert order.specimens[0].blocks[0].slides == (SlideIn("A1-1", "HE"),)


# --- ADT ---


def test_adt_a08() -> None:
    parsed = parse_message(read("adt_a08.hl7"))
    assert parsed.header.message_type == "ADT^A08"
    assert parsed.content == JANE_MR


def test_adt_a40() -> None:
    parsed = parse_message(read("adt_a40.hl7"))
    assert parsed.content == PatientMerge(JANE_MR, "MRN-0099999")


def test_adt_a40_errors() -> None:
    a40 = read("adt_a40.hl7")
    assert error_of(replace_segment(a40, "MRG", None)).location == "MRG^1"
    itself = replace_segment(a40, "MRG", "MRG|MRN-0012345^^^HOSP^MR")
    assert "itself" in error_of(itself).reason
    pair = a40 + "PID|2||MRN-1^^^HOSP^MR\rMRG|MRN-2^^^HOSP^MR\r"
    assert "one PID/MRG pair" in error_of(pair).reason


# --- rejects ---


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("", 100),
        ("hello world", 100),
        ("PID|1||MRN-0012345", 100),
        ("MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5.1\rPID|1||X", 200),
        ("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5.1\rPID|1||X", 201),
        ("MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|3.0\rPID|1||X", 203),
        ("MSH|^~\\&|A|B|C|D|20240101||ADT^A08||P|2.5.1\rPID|1||X", 101),
    ],
)
def test_rejects(message: str, code: int) -> None:
    error = error_of(message)
    assert (error.ack_code, error.code) == ("AR", code)


# --- ACKs ---


def test_ack_accept_content() -> None:
    header = read_header(read("oml_o21.hl7"))
    ack = build_ack(header, "AA", "case created", control_id="ACK-1")
    parsed = hl7.parse(ack)
    msh, msa = parsed.segment("MSH"), parsed.segment("MSA")
    assert str(msh[3]) == "SLIDESERVER"  # our application: the message's receiver
    assert str(msh[4]) == "PATHLAB"
    assert str(msh[5]) == "COPATH"  # the sender
    assert str(msh[9]) == "ACK^O21^ACK"
    assert str(msh[10]) == "ACK-1"
    assert str(msh[11]) == "P"
    assert str(msh[12]) == "2.5.1"
    assert [str(msa[1]), str(msa[2]), str(msa[3])] == ["AA", "MSG-OML-0001", "case created"]
    assert not list(parsed.segments("ERR")) if "ERR" in ack else True
    assert ack.endswith("\r")


def test_ack_error_content_is_escaped() -> None:
    header = read_header(read("oml_o21.hl7"))
    ack = build_ack(header, "AE", "PID-7 is bad | really ^ bad", error_code=102, location="PID^1^7")
    parsed = hl7.parse(ack)
    err = parsed.segment("ERR")
    assert str(err[2]) == "PID^1^7"
    assert str(err[3]) == "102^Data type error^HL70357"
    assert str(err[4]) == "E"
    assert parsed.unescape(str(err[8])) == "PID-7 is bad | really ^ bad"
    assert str(parsed.segment("MSA")[1]) == "AE"


def test_ack_without_header() -> None:
    ack = build_ack(None, "AR", "garbage", error_code=100)
    parsed = hl7.parse(ack)
    assert str(parsed.segment("MSH")[9]) == "ACK"
    assert str(parsed.segment("MSA")[2]) == ""


# --- handle_message: apply, record, never raise ---


def test_handle_order_records_and_accepts() -> None:
    store = RecordingStore()
    raw = read("oml_o21.hl7")
    reply = handle_message(raw, store)
    assert reply.code == "AA"
    assert reply.detail == "case created"
    assert store.orders[0].accession == "S24-01234"
    assert store.messages == [("hl7v2", raw, "AA", "case created")]
    assert "MSA|AA|MSG-OML-0001|" in reply.ack
    again = handle_message(raw, store)
    assert again.code == "AA"
    assert again.detail == "no change (already applied)"


def test_handle_adt() -> None:
    store = RecordingStore()
    assert handle_message(read("adt_a08.hl7"), store).detail == "patient updated"
    assert store.updates == [JANE_MR]
    assert handle_message(read("adt_a40.hl7"), store).detail == "patients merged"
    assert store.merges == [(JANE_MR, "MRN-0099999")]
    store.known = False
    reply = handle_message(read("adt_a08.hl7"), store)
    assert (reply.code, reply.detail) == ("AA", "patient not known; nothing to update")


def test_handle_store_failure_is_an_internal_error() -> None:
    store = RecordingStore(fail=True)
    reply = handle_message(read("oml_o21.hl7"), store)
    assert reply.code == "AE"
    assert reply.internal
    assert "database is down" not in reply.ack
    assert "207^Application internal error" in reply.ack
    assert store.messages[0][2] == "AE"


def test_handle_rejects_are_recorded_with_their_reason() -> None:
    store = RecordingStore()
    reply = handle_message("MSH|^~\\&|A|B|C|D|20240101||ORU^R01|C-9|P|2.5.1\r", store)
    assert reply.code == "AR"
    assert not reply.internal
    assert "MSA|AR|C-9|" in reply.ack
    assert store.messages[0][2:] == ("AR", "unsupported message type 'ORU^R01'")


def test_garbage_never_raises() -> None:
    rng = random.Random(7)
    valid = read("oml_o21.hl7")
    store = RecordingStore()
    samples = [valid[: rng.randrange(len(valid))] for _ in range(60)]
    samples += ["".join(rng.choice("MSH|^~\\&\r\n\x0bA1") for _ in range(80)) for _ in range(60)]
    samples += ["MSH", "MSH|", "MSH|^~\\&", "MSH|^~\\&|||||||||||\r" * 3, "\x00\xff" * 10]
    for raw in samples:
        reply = handle_message(raw, store)
        assert reply.code in {"AA", "AE", "AR"}
        assert hl7.parse(reply.ack).segment("MSA")


# --- over HTTP, against the real SQL catalog ---


@pytest.fixture(scope="module")
def lis_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with sql_lis_client(tmp_path_factory.mktemp("lis")) as client:
        yield client


def test_http_hl7v2(lis_client: Any) -> None:
    post = lis_client.post
    ok = post(
        "/api/lis/hl7v2",
        content=read("oml_o21.hl7").encode(),
        headers={"content-type": "x-application/hl7-v2+er7"},
    )
    assert ok.status_code == 200, ok.text
    assert ok.headers["content-type"].startswith("application/hl7-v2")
    assert "MSA|AA|MSG-OML-0001|" in ok.text
    catalog = lis_client.app.state.slideserver.catalog
    case = catalog.get_case("S24-01234")
    assert case.patient == JANE_MR
    assert [b.id for b in case.specimens[0].blocks] == ["A1", "A2"]

    garbage = post("/api/lis/hl7v2", content=b"not hl7 at all")
    assert garbage.status_code == 400
    assert "MSA|AR|" in garbage.text

    no_mrn = read("oml_o21.hl7").replace("MRN-0012345^^^HOSP&1.2.3.4.5.6.7&ISO^MR~", "")
    no_mrn = no_mrn.replace("999-99-9999^^^SSA^SS", "")
    invalid = post("/api/lis/hl7v2", content=no_mrn.encode())
    assert invalid.status_code == 422
    assert "MSA|AE|MSG-OML-0001|" in invalid.text

    a08 = read("adt_a08.hl7").replace("DOE^JANE", "DOE-SMITH^JANE")
    updated = post("/api/lis/hl7v2", content=a08.encode())
    assert updated.status_code == 200
    assert catalog.get_case("S24-01234").patient.name == "DOE-SMITH^JANE"

    a40 = (
        read("adt_a40.hl7")
        .replace("MRN-0012345", "MRN-0077777")
        .replace("MRG|MRN-0099999", "MRG|MRN-0012345")
    )
    merged = post("/api/lis/hl7v2", content=a40.encode())
    assert merged.status_code == 200
    assert [c.accession for c in catalog.cases_of_patient("MRN-0077777")] == ["S24-01234"]
