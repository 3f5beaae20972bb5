"""``serve`` off loopback: TLS here, or a TLS proxy stated in front, or it refuses to start.

Real ``slideserver serve`` processes: refusals exit before binding; the TLS server completes a
real handshake with a self-signed certificate made here.
"""

from __future__ import annotations

import ipaddress
import ssl
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.live_server import live_server, scrubbed_environ


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slideserver", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**scrubbed_environ(), **(env or {})},
    )


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key: ``(cert.pem, key.pem)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_plain_http_off_loopback_is_refused(samples_root: Path) -> None:
    refused = _serve(str(samples_root), "--host", "0.0.0.0", "--auth", "tokens")
    assert refused.returncode == 2
    assert "refusing plain HTTP on 0.0.0.0" in refused.stderr
    assert "--ssl-certfile" in refused.stderr and "--behind-tls-proxy" in refused.stderr


def test_open_mode_off_loopback_needs_tls_too(samples_root: Path) -> None:
    refused = _serve(
        str(samples_root), "--host", "0.0.0.0", "--auth", "open", "--allow-open-non-loopback"
    )
    assert refused.returncode == 2 and "refusing plain HTTP" in refused.stderr


def test_a_certificate_needs_its_key(samples_root: Path, self_signed: tuple[Path, Path]) -> None:
    cert, _ = self_signed
    refused = _serve(
        str(samples_root), "--host", "0.0.0.0", "--auth", "tokens", "--ssl-certfile", str(cert)
    )
    assert refused.returncode == 2 and "go together" in refused.stderr


def test_tls_off_loopback_serves_a_real_handshake(
    samples_root: Path, self_signed: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = self_signed
    log = tmp_path / "serve.log"
    with live_server(
        [samples_root],
        "--host",
        "0.0.0.0",
        "--auth",
        "tokens",
        "--database-url",
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        "--ssl-certfile",
        str(cert),
        "--ssl-keyfile",
        str(key),
        tls_ca=cert,
        log=log,
        scrub_env=True,
    ) as base:
        assert base.startswith("https://")
        trusting = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(verify=trusting) as client:
            assert client.get(f"{base}/healthz").status_code == 200
            assert client.get(f"{base}/api/slides").status_code == 401  # TLS, still auth
        with pytest.raises(httpx.ConnectError):  # an unknown certificate fails the handshake
            httpx.get(f"{base}/healthz", verify=ssl.create_default_context())
        plain = base.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            httpx.get(f"{plain}/healthz").raise_for_status()
    assert "TLS on 0.0.0.0" in log.read_text()


def test_behind_tls_proxy_from_the_environment_serves_and_says_so(
    samples_root: Path, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    env = {"SLIDESERVER_BEHIND_TLS_PROXY": "1"}
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with live_server(
        [samples_root],
        "--host",
        "0.0.0.0",
        "--auth",
        "tokens",
        "--database-url",
        url,
        env=env,
        log=log,
        scrub_env=True,
    ) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
    assert "plain HTTP on 0.0.0.0" in log.read_text()
    assert "for a TLS proxy in front" in log.read_text()


def test_forwarded_allow_ips_states_a_proxy_and_only_it_is_trusted(
    samples_root: Path, tmp_path: Path
) -> None:
    """The addresses given reach uvicorn: ``X-Forwarded-Proto`` from anyone else (here the
    test, on 127.0.0.1, which uvicorn trusts by default) does not make a request HTTPS."""
    from tests.conftest import _security_settings, make_tokens

    log = tmp_path / "serve.log"
    db = tmp_path / "db.sqlite"
    token = make_tokens(_security_settings(samples_root, db), {"v": ("pathologist", "")})["v"]
    with live_server(
        [samples_root],
        "--host",
        "0.0.0.0",
        "--auth",
        "tokens",
        "--database-url",
        f"sqlite:///{db}",
        "--forwarded-allow-ips",
        "10.9.9.9",
        log=log,
        scrub_env=True,
    ) as base:
        headers = {"Authorization": f"Bearer {token}", "X-Forwarded-Proto": "https"}
        login = httpx.post(f"{base}/api/session", headers=headers)
        assert login.status_code == 200 and "Secure" not in login.headers["set-cookie"]
    assert "X-Forwarded-* trusted from 10.9.9.9" in log.read_text()


def test_loopback_plain_http_is_said_at_start_up(samples_root: Path, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with live_server([samples_root], "--database-url", url, log=log, scrub_env=True) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
    assert "plain HTTP on 127.0.0.1" in log.read_text() and "loopback only" in log.read_text()


def test_the_transport_rule() -> None:
    from slideserver.server.runner import is_loopback
    from slideserver.server.runner import transport_refusal as _transport_refusal
    from slideserver.settings import Settings

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert _transport_refusal(Settings(host="127.0.0.1")) is None
    assert _transport_refusal(Settings(host="0.0.0.0"))
    assert _transport_refusal(Settings(host="0.0.0.0", behind_tls_proxy=True)) is None
    assert _transport_refusal(Settings(host="0.0.0.0", forwarded_allow_ips="10.0.0.5")) is None
    assert _transport_refusal(Settings(host="0.0.0.0", ssl_keyfile="key.pem"))
