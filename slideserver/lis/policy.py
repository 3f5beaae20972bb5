"""Which order number is a case's accession, per sending system, and what to do without it.

An order carries two numbers: the placer order number (ORC-2, given by the system that asked
for the work) and the filler order number (ORC-3, given by the laboratory that does it). The
accession is the laboratory's number, so the default is the **filler** number; an
anatomic-pathology LIS that sends its own cases (it is the laboratory, and puts its case number
in ORC-2) is configured as a ``placer`` sender.

``SLIDESERVER_LIS_ACCESSION_SOURCE`` is a comma-separated list: a bare ``filler`` or ``placer``
sets the default, ``NAME=placer`` overrides it for the sender whose MSH-3 (sending application)
or MSH-4 (sending facility) is ``NAME`` (``APP^FACILITY`` names both), e.g.
``filler,COPATH=placer``. ``SLIDESERVER_LIS_MISSING_ACCESSION`` says what an order without that
number gets: ``pending`` (kept, and matched by its other number when a later message brings the
accession) or ``refuse`` (answered AE). The other number is never used instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

FILLER = "filler"
PLACER = "placer"
PENDING = "pending"
REFUSE = "refuse"


@dataclass(frozen=True)
class AccessionPolicy:
    """Where the accession comes from (per sender) and what to do when it is missing."""

    default: str = FILLER
    senders: Mapping[str, str] = field(default_factory=dict)
    """``APP``, ``FACILITY`` or ``APP^FACILITY`` (upper case) -> ``filler`` or ``placer``."""
    missing: str = PENDING

    @classmethod
    def parse(cls, source: str = FILLER, missing: str = PENDING) -> AccessionPolicy:
        """Build the policy from the two settings; raise ValueError on a malformed one."""
        default = FILLER
        senders: dict[str, str] = {}
        for item in (part.strip() for part in source.split(",")):
            if not item:
                continue
            name, _, value = item.rpartition("=")
            value = value.strip().lower()
            if value not in {FILLER, PLACER}:
                raise ValueError(f"accession source {value!r} is not 'filler' or 'placer'")
            if name.strip():
                senders[name.strip().upper()] = value
            else:
                default = value
        missing = missing.strip().lower()
        if missing not in {PENDING, REFUSE}:
            raise ValueError(f"missing accession policy {missing!r} is not 'pending' or 'refuse'")
        return cls(default, senders, missing)

    def source_for(self, application: str, facility: str) -> str:
        """Return ``filler`` or ``placer`` for the sender named by MSH-3 and MSH-4."""
        app, fac = application.strip().upper(), facility.strip().upper()
        for key in (f"{app}^{fac}", app, fac):
            if key and key != "^" and key in self.senders:
                return self.senders[key]
        return self.default


__all__ = ["FILLER", "PENDING", "PLACER", "REFUSE", "AccessionPolicy"]
