"""The DICOM C-STORE and C-ECHO SCP (pynetdicom): scanners and PACS that only speak DIMSE.

Bound on ``dicom_host:dicom_port`` (loopback by default, never following ``host``), answering
to ``dicom_ae_title`` only, for the calling AE titles of ``dicom_allowed_aes`` (an empty list
admits any calling AE, so it is refused off loopback: DICOM has no authentication of its own).
Only VL Whole Slide Microscopy Image Storage (and Verification) is negotiated: other SOP
classes are refused at association time. Each instance goes to the
:class:`~slideserver.dicom.intake.DicomIntake` as STOW-RS's do, and is audited like a write:
an ``attempt`` row before it is stored, a ``request`` row with the outcome after, under the
sender's name (``dicom:AE@ADDRESS``), role ``lis``, with the instance's accession and patient; an
unwritable audit trail refuses the instance (out of resources: the sender retries). When an
association ends, whole slides are shown and indexed at once.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydicom.uid import VLWholeSlideMicroscopyImageStorage
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

from slideserver.dicom.instance import (
    DUPLICATE_SOP_INSTANCE,
    OUT_OF_RESOURCES,
    SOP_CLASS_NOT_SUPPORTED,
    InstanceRefused,
    WsiInstance,
    read_instance,
)
from slideserver.dicom.intake import DicomIntake, Index
from slideserver.security import Security
from slideserver.security.audit import AuditEvent, AuditStore, AuditUnavailable
from slideserver.security.principals import LIS
from slideserver.settings import Settings

log = logging.getLogger("slideserver.dicom.scp")

ACTION = "DIMSE C-STORE"
METHOD = "DIMSE"
SUCCESS = 0x0000
VERIFICATION = "1.2.840.10008.1.1"
"""The Verification SOP class (C-ECHO)."""
_AUDIT_STATUS = {DUPLICATE_SOP_INSTANCE: 409, SOP_CLASS_NOT_SUPPORTED: 415, OUT_OF_RESOURCES: 507}
"""The HTTP status a STOW-RS of the same instance would answer, for the audit row."""


def allowed_aes(setting: str) -> list[str]:
    """The calling AE titles of ``dicom_allowed_aes`` (empty: any)."""
    return [title.strip() for title in setting.split(",") if title.strip()]


def scp_refusal(settings: Settings) -> str | None:
    """Why the SCP the settings ask for must not start, or ``None``."""
    if not settings.dicom_port:
        return None
    if not settings.dicom_store_dir:
        return (
            "--dicom-port needs --dicom-store-dir (dicom_store_dir): the folder received "
            "instances are stored in"
        )
    if not allowed_aes(settings.dicom_allowed_aes) and not _loopback(settings.dicom_host):
        return (
            f"refusing the DICOM SCP on {settings.dicom_host} without --dicom-allowed-aes "
            "(dicom_allowed_aes): any calling AE on the network could store slides. Name the AE "
            "titles of the scanners and archives that may store, or bind --dicom-host 127.0.0.1"
        )
    return None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StoreScp:
    """The listening AE: associations in, instances to the intake."""

    def __init__(
        self,
        intake: DicomIntake,
        audit: AuditStore | None,
        *,
        ae_title: str,
        host: str,
        port: int,
        allowed: list[str],
    ) -> None:
        self.intake = intake
        self.audit = audit
        self.address = (host, port)
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(VLWholeSlideMicroscopyImageStorage, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(VERIFICATION)
        ae.require_called_aet = True
        ae.require_calling_aet = allowed
        self.ae = ae
        self._server: Any = None

    @property
    def port(self) -> int:
        """The port bound (the one asked for, or the one the system gave for 0)."""
        if self._server is None:
            return self.address[1]
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve in pynetdicom's threads; raise ``OSError`` if the port is taken."""
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end),
        ]
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # a line per PDU otherwise
        self._server = self.ae.start_server(self.address, block=False, evt_handlers=handlers)
        log.info("DICOM SCP %s listening on %s:%d", self.ae.ae_title, self.address[0], self.port)

    def stop(self) -> None:
        """Stop listening and end open associations."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_store(self, event: Any) -> int:
        requestor = event.assoc.requestor
        sender = f"dicom:{str(requestor.ae_title).strip()}@{requestor.address}"
        data = event.encoded_dataset(include_meta=True)
        try:
            instance = read_instance(data)
        except InstanceRefused as exc:
            log.info("C-STORE from %s refused: %s", sender, exc.detail)
            self._audit(sender, requestor.address, None, "request", _status(exc.reason))
            return exc.reason
        if not self._audit(sender, requestor.address, instance, "attempt", None):
            return OUT_OF_RESOURCES
        try:
            self.intake.store.store(instance)
        except InstanceRefused as exc:
            log.info("C-STORE from %s refused: %s", sender, exc.detail)
            self._audit(sender, requestor.address, instance, "request", _status(exc.reason))
            return exc.reason
        if not self._audit(sender, requestor.address, instance, "request", 200):
            return OUT_OF_RESOURCES  # stored, but unaudited: the sender retries (a duplicate)
        return SUCCESS

    def _on_end(self, event: Any) -> None:
        try:
            self.intake.settle()
        except Exception:
            log.exception("staged DICOM slides could not be shown after an association")

    def _audit(
        self,
        sender: str,
        address: str,
        instance: WsiInstance | None,
        kind: str,
        status: int | None,
    ) -> bool:
        if self.audit is None:
            return True
        event = AuditEvent(
            at=datetime.now(UTC),
            kind=kind,
            subject=sender,
            role=LIS,
            action=ACTION,
            method=METHOD,
            case_id=instance.accession if instance is not None else None,
            patient_id=instance.patient_id if instance is not None else None,
            client=address,
            status=status,
            request_id=instance.sop_instance_uid if instance is not None else None,
        )
        try:
            self.audit.write(event)
        except AuditUnavailable:
            log.warning("C-STORE from %s refused: audit trail not writable", sender)
            return False
        return True


def _status(reason: int) -> int:
    return _AUDIT_STATUS.get(reason, 400)


@dataclass
class DicomService:
    """The intake and, when a port is set, its SCP: opened and closed by the app's lifespan."""

    intake: DicomIntake
    scp: StoreScp | None = None

    def stop(self) -> None:
        if self.scp is not None:
            self.scp.stop()


async def start_dicom(settings: Settings, index: Index, security: Security) -> DicomService | None:
    """Open the DICOM store (``dicom_store_dir``) and start the SCP (``dicom_port``).

    ``None`` when storing is off. Refuses (ValueError) what ``serve`` must not run:
    see :func:`scp_refusal`. C-STOREs are audited in ``security``'s audit trail.
    """
    refusal = scp_refusal(settings)
    if refusal:
        raise ValueError(refusal)
    if not settings.dicom_store_dir:
        return None
    intake = DicomIntake.from_settings(settings, index)
    service = DicomService(intake)
    if settings.dicom_port:
        service.scp = StoreScp(
            intake,
            security.audit,
            ae_title=settings.dicom_ae_title,
            host=settings.dicom_host,
            port=settings.dicom_port,
            allowed=allowed_aes(settings.dicom_allowed_aes),
        )
        service.scp.start()
    return service


__all__ = ["DicomService", "StoreScp", "allowed_aes", "scp_refusal", "start_dicom"]
