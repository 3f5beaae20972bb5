"""Shared fixtures: real sample slides written by real libraries, apps built per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# --- sample slides ---


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Write every small sample slide once per session; return file name -> path."""
    from slideserver.samples import write_samples

    out = tmp_path_factory.mktemp("samples")
    return {path.name: path for path in write_samples(out).values()}


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


# --- redis ---


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real redis-server on 127.0.0.1 (free port, temp folder), always stopped afterwards."""
    import shutil

    from tests.redis_server import RedisServer

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- databases ---
# The catalog suites run twice: against SQLite and against a real PostgreSQL started here.

from typing import Any  # noqa: E402


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """A temporary PostgreSQL server on a unix socket, stopped at the end of the session."""
    from tests.postgres import find_bin_dir, temp_postgres

    if find_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (no initdb); `make system-deps` installs it")
    with temp_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_catalog_url(postgres_server: Any) -> str:
    """One PostgreSQL database for the catalog suites, emptied before each test."""
    return str(postgres_server.create_database("catalog"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty catalog database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    server = request.getfixturevalue("postgres_server")
    url = str(request.getfixturevalue("postgres_catalog_url"))
    server.truncate_all("catalog")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nothing has migrated yet, per backend (PostgreSQL: created, then dropped)."""
    import uuid

    from sqlalchemy import create_engine, text

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"fresh_{uuid.uuid4().hex[:12]}"
    url = str(server.create_database(name))
    try:
        yield url
    finally:
        admin = create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def tiny_slides(tmp_path: Path) -> object:
    """A factory of tiny real slide files: ``make(relpath, tag, barcode=None, root=None)``.

    Each file is a 512 x 512 tiled JPEG TIFF whose description carries ``tag`` (so its content
    hash is unique); with a barcode it is written as an Aperio SVS that OpenSlide reads.
    """
    import numpy as np
    import tifffile

    pixels = np.full((512, 512, 3), 200, np.uint8)
    root = tmp_path / "slides"
    root.mkdir(exist_ok=True)

    def make(relpath: str, tag: str = "", barcode: str | None = None) -> Path:
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        tag = tag or relpath
        if barcode is None:
            description = f"slide {tag}"
        else:
            description = (
                "Aperio Image Library v12.0.5\r\n512x512 [0,0 512x512] (256x256) JPEG/RGB Q=70"
                f"|AppMag = 20|MPP = 0.5|Date = 01/05/24|Barcode = {barcode}|Tag = {tag}"
            )
        tifffile.imwrite(
            path,
            pixels,
            tile=(256, 256),
            compression="jpeg",
            metadata=None,
            description=description,
        )
        return path

    make.root = root  # type: ignore[attr-defined]
    return make


@pytest.fixture
def tiny_dicom(tiny_slides: object) -> object:
    """A factory of tiny DICOM WSI folders: ``make(relpath, patient_id, accession, ...)``."""
    import numpy as np
    from numpy.typing import NDArray

    from slideserver.samples.dicom import write_dicom_wsi

    class _Flat:
        width = 256
        height = 256

        def region(self, x: int, y: int, w: int, h: int, downsample: int = 1) -> NDArray[np.uint8]:
            return np.full((h, w, 3), 180, np.uint8)

    def make(
        relpath: str,
        *,
        patient_id: str,
        accession: str,
        container_id: str,
        stain: str = "HE",
        patient_name: str = "DOE^JANE",
    ) -> Path:
        folder: Path = tiny_slides.root / relpath  # type: ignore[attr-defined]
        write_dicom_wsi(
            folder,
            _Flat(),
            tile_size=128,
            level_count=1,
            patient_id=patient_id,
            patient_name=patient_name,
            accession=accession,
            container_id=container_id,
            stain=stain,
        )
        return folder

    return make


# --- security ---
# Apps with authentication on (auth=tokens or oidc) over the samples, tokens made through the
# token store, and a real JWKS served over HTTP on 127.0.0.1 for the OIDC tests.

SECURITY_ROLES = ("admin", "pathologist", "researcher", "lis")


def _security_settings(samples_root: Path, db: Path | str, **overrides: object) -> object:
    """Settings of an ``auth=tokens`` app; ``db`` is a SQLite file or a database URL."""
    from slideserver.settings import Settings

    values: dict[str, object] = {
        "roots": (samples_root,),
        "auth": "tokens",
        "database_url": db if isinstance(db, str) else f"sqlite:///{db}",
        "session_secret": "test-session-secret",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def make_tokens(settings: object, specs: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Create API tokens (name -> (role, collections)) in the settings' database."""
    from slideserver.security import Security

    security = Security(settings)  # type: ignore[arg-type]
    security.open()
    try:
        assert security.tokens is not None
        return {
            name: security.tokens.create(name, role, collections)[1]
            for name, (role, collections) in specs.items()
        }
    finally:
        security.close()


@pytest.fixture(scope="session")
def secure_env(samples_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """An ``auth=tokens`` app over the samples and one token per role: ``(client, tokens)``."""
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app

    db = tmp_path_factory.mktemp("secure") / "db.sqlite"
    settings = _security_settings(samples_root, db)
    tokens = make_tokens(settings, {role: (role, "") for role in SECURITY_ROLES})
    app = create_app(settings)  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as test_client:
        yield test_client, tokens


@pytest.fixture(scope="session")
def rsa_keys() -> dict[str, object]:
    """Two RSA key pairs: ``good`` (published in the JWKS) and ``evil`` (not published)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return {
        name: rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for name in ("good", "evil")
    }


@pytest.fixture(scope="session")
def jwks_server(rsa_keys: dict[str, object]) -> Iterator[str]:
    """An OIDC issuer on 127.0.0.1 serving discovery and a JWKS; yields the issuer URL."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import jwt

    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_keys["good"].public_key()))  # type: ignore[attr-defined]
    jwk.update({"kid": "good", "use": "sig", "alg": "RS256"})
    documents: dict[str, bytes] = {"/jwks.json": json.dumps({"keys": [jwk]}).encode()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = documents.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body or b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer = f"http://127.0.0.1:{server.server_address[1]}"
    documents["/.well-known/openid-configuration"] = json.dumps(
        {"issuer": issuer, "jwks_uri": f"{issuer}/jwks.json"}
    ).encode()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
