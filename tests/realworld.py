"""Where the real-world test material is: ``shared/realworld`` beside the project checkout.

In CI the project is a fresh clone with ``shared/`` beside it; a developer's git worktree may sit
a level or two deeper, so the nearest ancestor folder holding ``shared/realworld`` is used. No
absolute path is written anywhere.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def realworld_dir() -> Path:
    """Return the real-world material folder; fail loudly when the checkout lacks it."""
    for folder in REPO_ROOT.parents:
        candidate = folder / "shared" / "realworld"
        if (candidate / "SOURCES.md").is_file():
            return candidate
    raise FileNotFoundError("shared/realworld is missing beside the project checkout")


def copy_slides(relpaths: dict[str, str], target: Path) -> Path:
    """Copy real-world slides (``slides/...`` relpath -> name in ``target``), writable."""
    source = realworld_dir() / "slides"
    for relpath, name in relpaths.items():
        out = target / name
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relpath, out)
    return target
