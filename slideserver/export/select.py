"""Which slides an export may take, as whom, and the audit rows that record it.

Read where the slides are, the export runs as a principal: the holder of ``--token`` (checked
against the token store: a researcher's token brings its de-identification and collections), or
without one the operator (``cli:USER``, admin: whoever can read the catalog database and the
slide folders already sees everything). Every slide is recorded in the audit trail before its
pixels are read; if the row cannot be written, nothing is exported. Through the server's API,
the server applies its own rules and audit to the token the client sends.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from slideserver.catalog.base import Catalog, SlideQuery, SlideRecord
from slideserver.client import Client
from slideserver.client.errors import NotFound as ClientNotFound
from slideserver.errors import SlideServerError
from slideserver.export.plan import SlideEntry
from slideserver.security import Principal, Security
from slideserver.security.audit import AuditEvent
from slideserver.security.deidentify import for_principal, identifying_search
from slideserver.security.principals import in_collections
from slideserver.settings import Settings

AUDIT_ACTION = "EXPORT patches"
PAGE = 1000


class ExportRefused(SlideServerError):
    """The export cannot run as asked (bad token, a selection the reading side cannot make)."""

    code = "export_refused"


@dataclass(frozen=True)
class Selection:
    """Which slides: IDs, a search, or a collection (one of them)."""

    ids: tuple[str, ...] = ()
    query: str | None = None
    collection: str | None = None

    def __post_init__(self) -> None:
        given = sum((bool(self.ids), self.query is not None, self.collection is not None))
        if given != 1:
            raise ExportRefused("choose the slides with --query TEXT, --collection NAME or IDs")


def operator() -> Principal:
    """The principal of an export run without a token: the operator of this machine."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Principal(subject=f"cli:{user}", role="admin", method="cli")


class LocalCatalog:
    """The catalog and security store of the slide folders, for an export read from files."""

    def __init__(self, settings: Settings, token: str | None = None) -> None:
        from slideserver.catalog.sql import open_catalog
        from slideserver.readers.registry import default_registry

        self.security = Security(replace(settings, auth="open"))
        self.security.open(settings.database_url)
        self.catalog: Catalog = open_catalog(settings, default_registry())
        self.principal = operator() if token is None else self._token_principal(token)

    def _token_principal(self, token: str) -> Principal:
        assert self.security.tokens is not None
        check = self.security.tokens.check(token)
        if check.principal is None:
            self.close()
            raise ExportRefused("the token is not valid (unknown, revoked or expired)")
        return check.principal

    def close(self) -> None:
        self.security.close()
        self.catalog.close()

    def refresh(self) -> int:
        return self.catalog.refresh()

    def select(self, selection: Selection) -> tuple[list[SlideEntry], list[str]]:
        """The readable slides chosen and visible to the principal, and the IDs not found."""
        principal = self.principal
        records: list[SlideRecord] = []
        missing: list[str] = []
        if selection.ids:
            for slide_id in selection.ids:
                record = self.catalog.get(slide_id)
                if record is None or not self._visible(record):
                    missing.append(slide_id)
                else:
                    records.append(record)
        elif selection.query is not None:
            if not identifying_search(principal, {"q": selection.query}):
                records = [r for r in self._search(selection.query) if self._visible(r)]
        else:
            wanted = (str(selection.collection).strip("/"),)
            records = [
                r
                for r in self._search("")
                if in_collections(wanted, r.root.name, r.relpath) and self._visible(r)
            ]
        entries = [self._entry(r) for r in records if r.status == "ok"]
        return entries, missing

    def _search(self, text: str) -> Iterator[SlideRecord]:
        cursor = ""
        while True:
            page = self.catalog.search(SlideQuery(q=text, limit=PAGE, cursor=cursor))
            yield from page.items
            if not page.next:
                return
            cursor = page.next

    def _visible(self, record: SlideRecord) -> bool:
        return in_collections(self.principal.collections, record.root.name, record.relpath)

    def _entry(self, record: SlideRecord) -> SlideEntry:
        shown = for_principal({"id": record.id, "name": record.name}, self.principal)
        case = record.extra.get("case") if record.extra else None
        accession = patient = None
        if isinstance(case, dict):
            accession = case.get("accession")
            who = case.get("patient")
            patient = who.get("id") if isinstance(who, dict) else None
        subjects = (str(accession) if accession else None, str(patient) if patient else None)
        return SlideEntry(record.id, str(shown["name"]), record.source, subjects)

    def audit(self, slide: SlideEntry, patches: int) -> None:
        """Record that the principal is about to read ``patches`` patches of ``slide``
        (raises ``AuditUnavailable`` when the row cannot be written: nothing is read then)."""
        assert self.security.audit is not None
        principal = self.principal
        self.security.audit.write(
            AuditEvent(
                at=datetime.now(UTC),
                kind="request",
                subject=principal.subject,
                role=principal.role,
                action=AUDIT_ACTION,
                method="CLI",
                token_name=principal.token_name,
                slide_id=slide.slide_id,
                case_id=slide.subjects[0],
                patient_id=slide.subjects[1],
                resource="patches",
                client="cli",
                status=200,
                count=patches,
            )
        )


class ApiCatalog:
    """Slides chosen through the server's API: its de-identification, collections and audit."""

    def __init__(self, server: str, token: str | None) -> None:
        self.client = Client(server, token)

    def close(self) -> None:
        self.client.close()

    def refresh(self) -> int:
        return 0

    def select(self, selection: Selection) -> tuple[list[SlideEntry], list[str]]:
        if selection.collection is not None:
            raise ExportRefused(
                "--collection reads the catalog: run the export where the slides are, or list "
                "the slide IDs (a researcher's token already limits the server to its collections)"
            )
        missing: list[str] = []
        slides = []
        if selection.query is not None:
            slides = list(self.client.slides(q=selection.query))
        for slide_id in selection.ids:
            try:
                slides.append(self.client.slide(slide_id))
            except ClientNotFound:
                missing.append(slide_id)
        entries = [
            SlideEntry(str(s["id"]), str(s.get("name") or s["id"]))
            for s in slides
            if s.get("status", "ok") == "ok"
        ]
        return entries, missing

    def audit(self, slide: SlideEntry, patches: int) -> None:
        """Nothing to do here: the server audits every read it answers."""


SlideCatalog = LocalCatalog | ApiCatalog
