"""Every LIS and FHIR write is safe to retry: sending a message again changes no clinical data.

A client whose answer was lost (a dropped connection, a killed instance behind nginx) sends the
same message again. The second delivery must leave patients, cases, specimens, blocks, slides,
links, their history and the review queue exactly as the first left them, row for row. What
records each receipt (the inbound message log and the audit trail) grows by design: it is the
record of what arrived and who sent it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.lis.support import read, sql_lis_client

RECEIPT_LOGS = frozenset({"inbound_messages", "security_audit_events", "security_sessions"})
"""Tables that record each delivery (not clinical data)."""

HL7 = "x-application/hl7-v2+er7"

MESSAGES = {
    "JSON order": ("/api/lis/cases", "json_order.json", "application/json"),
    "HL7 v2 ORM^O01": ("/api/lis/hl7v2", "orm_o01.hl7", HL7),
    "HL7 v2 OML^O21": ("/api/lis/hl7v2", "oml_o21.hl7", HL7),
    "FHIR transaction": ("/fhir", "fhir_transaction.json", "application/fhir+json"),
    "HL7 v2 ADT^A08 (patient update)": ("/api/lis/hl7v2", "adt_a08.hl7", HL7),
    "HL7 v2 ADT^A40 (merge)": ("/api/lis/hl7v2", "adt_a40.hl7", HL7),
}


def clinical_rows(database: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but the receipt logs, in a stable order."""
    with sqlite3.connect(database) as conn:
        tables = [
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if row[0] not in RECEIPT_LOGS
        ]
        return {
            table: sorted(conn.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
            for table in tables
        }


@pytest.fixture
def lis(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    with sql_lis_client(tmp_path) as client:
        yield client, tmp_path / "catalog.db"


@pytest.mark.parametrize("name", list(MESSAGES))
def test_a_retried_message_changes_no_clinical_data(lis: tuple[Any, Path], name: str) -> None:
    client, database = lis
    for earlier in list(MESSAGES)[: list(MESSAGES).index(name)]:  # the state it arrives in
        path, fixture, media_type = MESSAGES[earlier]
        client.post(path, content=read(fixture), headers={"content-type": media_type})
    path, fixture, media_type = MESSAGES[name]
    first = client.post(path, content=read(fixture), headers={"content-type": media_type})
    assert first.status_code in (200, 201), first.text
    after_first = clinical_rows(database)
    again = client.post(path, content=read(fixture), headers={"content-type": media_type})
    assert again.status_code == 200, again.text
    assert clinical_rows(database) == after_first


def test_each_receipt_is_logged_even_when_it_changes_nothing(lis: tuple[Any, Path]) -> None:
    client, database = lis
    path, fixture, media_type = MESSAGES["JSON order"]
    for _ in range(2):
        client.post(path, content=read(fixture), headers={"content-type": media_type})
    with sqlite3.connect(database) as conn:
        (count,) = conn.execute("SELECT count(*) FROM inbound_messages").fetchone()
    assert count == 2
