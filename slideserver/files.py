"""Facts about a slide's files on disk that several layers check: containment and change.

Here, below the catalog and the handle pool, so both ask the same questions the same way.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from slideserver.models import SlideSource


def is_within(path: Path, roots: Sequence[Path]) -> bool:
    """Tell whether ``path``, symlinks resolved, lies inside one of ``roots``."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return any(real.is_relative_to(root.resolve()) for root in roots)


def stat_fingerprint(source: SlideSource) -> str:
    """Size, mtime and inode of every file: changes whenever a file is replaced or rewritten."""
    parts = []
    for path in source.all_files:
        st = path.stat()
        parts.append(f"{st.st_size}.{st.st_mtime_ns}.{st.st_ino}")
    if len(parts) == 1:
        return parts[0]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()


def without_file_names(detail: str, source: SlideSource) -> str:
    """Return a reader's error text without the slide's paths, file names or folder name.

    Readers and their backends name the file they failed on; the name carries the accession
    number and the path the case's folders, which no error answer may show.
    """
    names: set[str] = set()
    for path in (source.path, *source.all_files):
        names |= {str(path), str(path.absolute()), os.path.realpath(path), path.name}
    for name in sorted(names, key=len, reverse=True):
        if name:
            detail = detail.replace(f"'{name}'", "the file").replace(name, "the file")
    return detail[:2000]
