"""DICOMweb for researchers is de-identified like the REST API; every read is audited.

Researchers get series without patient, case, dates, barcodes or label and overview instances,
under UIDs of their own that match none of the clinical ones; pathologists get the patient.
Metadata reads are audited with the case and patient they concern, frame reads counted like
tiles.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy import select

from slideserver.samples import SAMPLE_MRN, SAMPLE_PATIENT_NAME
from slideserver.security.audit import AuditEvent
from slideserver.security.schema import audit_events
from tests.test_security_phi import assert_no_phi

ACCESSIONS = ("S24-01234", "S24-05678")


def get(client: Any, token: str, url: str, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    return client.get(url, headers=headers, **kwargs)


def everything(client: Any, token: str) -> list[dict[str, Any]]:
    response = get(client, token, "/dicomweb/instances", params={"includefield": "all"})
    assert response.status_code == 200
    found: list[dict[str, Any]] = response.json()
    return found


def uids(items: list[dict[str, Any]], tag: str) -> set[str]:
    return {item[tag]["Value"][0] for item in items}


def assert_no_case(response: Any) -> None:
    assert_no_phi(response, str(response.request.url))
    for accession in ACCESSIONS:
        assert accession not in response.text


def test_researcher_instances_carry_no_patient_case_or_dates(secure_env: Any) -> None:
    client, tokens = secure_env
    response = get(client, tokens["researcher"], "/dicomweb/instances?includefield=all")
    assert response.status_code == 200 and response.json()
    assert_no_case(response)
    for item in response.json():
        ds = pydicom.Dataset.from_json(item)
        assert ds.PatientIdentityRemoved == "YES"
        assert not ds.PatientName and not ds.PatientID and not ds.AccessionNumber
        assert not ds.StudyDate and not ds.ContentDate


def test_researcher_gets_no_label_or_overview_instance(secure_env: Any) -> None:
    client, tokens = secure_env
    kinds = {item["00080008"]["Value"][2] for item in everything(client, tokens["researcher"])}
    assert kinds == {"VOLUME"}
    clinical = {item["00080008"]["Value"][2] for item in everything(client, tokens["pathologist"])}
    assert {"LABEL", "OVERVIEW"} <= clinical


def test_researcher_uids_match_none_of_the_clinical_ones(secure_env: Any) -> None:
    client, tokens = secure_env
    research = everything(client, tokens["researcher"])
    clinical = everything(client, tokens["pathologist"])
    for tag in ("0020000D", "0020000E", "00080018"):
        assert not uids(research, tag) & uids(clinical, tag), tag
    study = next(iter(uids(clinical, "0020000D")))
    response = get(client, tokens["researcher"], f"/dicomweb/studies/{study}/metadata")
    assert response.status_code == 404
    assert_no_case(response)


def test_researcher_searches_by_patient_or_case_find_nothing(secure_env: Any) -> None:
    client, tokens = secure_env
    for params in (
        {"PatientID": SAMPLE_MRN},
        {"PatientName": "DOE*"},
        {"AccessionNumber": "S24-01234"},
    ):
        response = get(client, tokens["researcher"], "/dicomweb/studies", params=params)
        assert response.status_code == 200 and response.json() == [], params
        assert get(client, tokens["pathologist"], "/dicomweb/studies", params=params).json()


def test_researcher_part10_instance_is_de_identified(secure_env: Any) -> None:
    client, tokens = secure_env
    smallest = min(
        everything(client, tokens["researcher"]), key=lambda i: i["00280008"]["Value"][0]
    )
    study, series, sop = (smallest[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018"))
    url = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    response = get(client, tokens["researcher"], url)
    assert response.status_code == 200
    ds = pydicom.dcmread(io.BytesIO(response.content))
    assert ds.PatientIdentityRemoved == "YES" and not ds.PatientName and not ds.AccessionNumber
    assert not any(a.encode() in response.content for a in ACCESSIONS)
    assert SAMPLE_MRN.encode() not in response.content


def test_pathologist_metadata_names_the_patient_and_is_audited_with_them(secure_env: Any) -> None:
    client, tokens = secure_env
    found = get(client, tokens["pathologist"], "/dicomweb/series", params={"PatientID": SAMPLE_MRN})
    study, series = (found.json()[0][t]["Value"][0] for t in ("0020000D", "0020000E"))
    response = get(
        client, tokens["pathologist"], f"/dicomweb/studies/{study}/series/{series}/metadata"
    )
    assert response.status_code == 200
    assert SAMPLE_PATIENT_NAME in response.text and SAMPLE_MRN in response.text
    request_id = response.headers["x-request-id"]
    with client.app.state.security.engine.connect() as conn:
        rows = conn.execute(
            select(audit_events).where(audit_events.c.request_id == request_id)
        ).all()
    events = [AuditEvent(**dict(r._mapping)) for r in rows]
    assert [(e.kind, e.patient_id, e.case_id, e.role) for e in events] == [
        ("request", SAMPLE_MRN, "S24-05678", "pathologist")
    ]
    assert events[0].action == "GET /dicomweb/studies/{study}/series/{series}/metadata"


def test_frame_reads_are_counted_like_tile_reads_with_the_patient(secure_env: Any) -> None:
    client, tokens = secure_env
    found = get(
        client, tokens["pathologist"], "/dicomweb/instances", params={"PatientID": SAMPLE_MRN}
    )
    item = next(i for i in found.json() if i["00080008"]["Value"][2] == "VOLUME")
    study, series, sop = (item[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018"))
    url = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1"
    assert get(client, tokens["pathologist"], url).status_code == 200
    audit = client.app.state.security.audit
    audit.flush_tiles(everything=True)
    with client.app.state.security.engine.connect() as conn:
        rows = conn.execute(
            select(audit_events).where(
                audit_events.c.kind == "tiles",
                audit_events.c.patient_id == SAMPLE_MRN,
                audit_events.c.subject == "token:pathologist",
            )
        ).all()
    assert rows and sum(r.count for r in rows) >= 1


def test_a_token_limited_to_collections_sees_only_those(samples_root: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from tests.conftest import _security_settings, make_tokens

    settings = _security_settings(samples_root, tmp_path / "db.sqlite")
    tokens = make_tokens(
        settings,
        {"limited": ("pathologist", "some-other-study"), "admin": ("admin", "")},
    )
    with TestClient(create_app(settings)) as client:  # type: ignore[arg-type]
        series = get(client, tokens["admin"], "/dicomweb/series").json()
        assert series
        assert get(client, tokens["limited"], "/dicomweb/series").json() == []
        study, uid = (series[0][t]["Value"][0] for t in ("0020000D", "0020000E"))
        url = f"/dicomweb/studies/{study}/series/{uid}/metadata"
        assert get(client, tokens["admin"], url).status_code == 200
        assert get(client, tokens["limited"], url).status_code == 404


def test_researcher_study_retrieval_is_de_identified(secure_env: Any) -> None:
    client, tokens = secure_env
    research = everything(client, tokens["researcher"])
    study = research[0]["0020000D"]["Value"][0]
    response = get(client, tokens["researcher"], f"/dicomweb/studies/{study}")
    assert response.status_code == 200
    assert not any(a.encode() in response.content for a in (*ACCESSIONS, SAMPLE_MRN))
    datasets = [pydicom.dcmread(io.BytesIO(body)) for body in part_bodies(response)]
    assert sorted(ds.SOPInstanceUID for ds in datasets) == sorted(
        i["00080018"]["Value"][0] for i in research if i["0020000D"]["Value"][0] == study
    )
    for ds in datasets:
        assert ds.PatientIdentityRemoved == "YES" and not ds.PatientID and not ds.PatientName
        assert not ds.AccessionNumber and not ds.StudyDate
        assert ds.ImageType[2] == "VOLUME"


def test_researcher_cannot_retrieve_a_clinical_study(secure_env: Any) -> None:
    client, tokens = secure_env
    study = next(iter(uids(everything(client, tokens["pathologist"]), "0020000D")))
    response = get(client, tokens["researcher"], f"/dicomweb/studies/{study}")
    assert response.status_code == 404
    assert_no_case(response)


def test_pathologist_study_retrieval_is_audited_with_the_patient(secure_env: Any) -> None:
    client, tokens = secure_env
    params = {"PatientID": SAMPLE_MRN}
    found = get(client, tokens["pathologist"], "/dicomweb/studies", params=params)
    study = found.json()[0]["0020000D"]["Value"][0]
    response = get(client, tokens["pathologist"], f"/dicomweb/studies/{study}")
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    with client.app.state.security.engine.connect() as conn:
        rows = conn.execute(
            select(audit_events).where(audit_events.c.request_id == request_id)
        ).all()
    events = [AuditEvent(**dict(r._mapping)) for r in rows]
    assert [(e.kind, e.patient_id, e.role, e.action) for e in events] == [
        ("request", SAMPLE_MRN, "pathologist", "GET /dicomweb/studies/{study}")
    ]


def test_the_lis_role_stores_studies_but_does_not_retrieve_them(secure_env: Any) -> None:
    client, tokens = secure_env
    study = next(iter(uids(everything(client, tokens["pathologist"]), "0020000D")))
    assert get(client, tokens["lis"], f"/dicomweb/studies/{study}").status_code == 403


def part_bodies(response: Any) -> list[bytes]:
    """The bodies of a multipart/related answer's parts."""
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + response.content)
    return [bytes(p.get_payload(decode=True)) for p in message.iter_parts()]
