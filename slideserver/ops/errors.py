"""Why a backup or a restore did not happen; each message is safe to print (no paths, no PHI)."""

from __future__ import annotations


class BackupError(Exception):
    """A backup or restore failed; ``str(exc)`` says why in words an operator can act on."""


class CorruptBackup(BackupError):
    """The backup's files do not match its manifest (or the manifest is unreadable)."""


class DatabaseNotEmpty(BackupError):
    """The restore target already holds tables; restores go only into an empty database."""


class CountMismatch(BackupError):
    """The restored tables do not hold the rows the manifest counted."""

    def __init__(self, differences: dict[str, tuple[int | None, int | None]]) -> None:
        self.differences = differences
        listed = ", ".join(
            f"{table}: {expected} in the backup, {found} restored"
            for table, (expected, found) in sorted(differences.items())
        )
        super().__init__(f"row counts differ from the manifest ({listed})")
