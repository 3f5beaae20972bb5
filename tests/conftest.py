"""Shared fixtures: real sample slides written by real libraries, apps built per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# --- sample slides ---


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Write every small sample slide once per session; return name -> path."""
    from slideserver.samples import write_samples

    out = tmp_path_factory.mktemp("samples")
    return write_samples(out)


@pytest.fixture(scope="session")
def samples_root(samples_dir: dict[str, Path]) -> Path:
    """The folder holding the sample slides."""
    return next(iter(samples_dir.values())).parent


# --- app ---


@pytest.fixture(scope="session")
def client(samples_root: Path) -> Iterator[object]:
    """A test client of an app serving the samples (lifespan run, in-process cache)."""
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from slideserver.settings import Settings

    app = create_app(Settings(roots=(samples_root,)))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
