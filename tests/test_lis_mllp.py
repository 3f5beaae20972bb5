"""MLLP over real loopback sockets: framing, one ACK per message, size bound, graceful stop; who
may send (bind address, allow-list, TLS client certificates) and the audit of what they send."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hl7
import hl7.client
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from slideserver.catalog.memory import MemoryCatalog
from slideserver.cli import main as cli_main
from slideserver.lis.mllp import END, START, Handler, MllpServer, Peer, frame, listener_refusal
from slideserver.readers.registry import default_registry
from slideserver.security.audit import AuditQuery, AuditUnavailable
from slideserver.services.links import LinkService
from tests.fixtures.lis.support import RecordingStore, read, sql_lis_client
from tests.live_server import live_server

TIMEOUT = 5.0


async def read_frame(reader: asyncio.StreamReader) -> str:
    data = await asyncio.wait_for(reader.readuntil(END), TIMEOUT)
    assert data.startswith(START)
    return data[1 : -len(END)].decode()


async def echo_ack(raw: str, peer: Peer) -> str:
    """A handler answering AA with MSA-2 = the first 10 characters of MSH-10."""
    control = raw.split("\r")[0].split("|")[9] if raw.startswith("MSH") else ""
    return f"MSH|^~\\&|T|T|||20240101||ACK|1|P|2.5.1\rMSA|AA|{control}\r"


def acking(links: LinkService) -> Handler:
    """The link service's ACK as a listener handler, without the app's audit."""

    async def handle(raw: str, peer: Peer) -> str:
        return await links.hl7v2_ack(raw)

    return handle


def message(control: str) -> str:
    return f"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|{control}|P|2.5.1\rPID|1||X^^^H^MR\r"


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


def test_one_ack_per_message_in_order() -> None:
    async def scenario() -> None:
        async with MllpServer(echo_ack, port=0) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            # two messages in one write, a third split across writes with junk before START
            writer.write(frame(message("C1")) + frame(message("C2")))
            payload = frame(message("C3"))
            writer.write(b"\r\n" + payload[:10])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(payload[10:])
            await writer.drain()
            acks = [await read_frame(reader) for _ in range(3)]
            assert [str(hl7.parse(a).segment("MSA")[2]) for a in acks] == ["C1", "C2", "C3"]
            writer.close()
            await writer.wait_closed()

    run(scenario)


def test_oversized_message_is_rejected_and_the_connection_closed() -> None:
    async def scenario() -> None:
        async with MllpServer(echo_ack, port=0, max_message_bytes=1000) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(START + b"MSH|" + b"x" * 5000)
            await writer.drain()
            ack = await read_frame(reader)
            assert "MSA|AR|" in ack
            assert "larger than 1000 bytes" in ack
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed
            writer.close()

    run(scenario)


def test_graceful_stop_finishes_the_message_in_progress() -> None:
    started = asyncio.Event()

    async def slow(raw: str, peer: Peer) -> str:
        started.set()
        await asyncio.sleep(0.3)
        return await echo_ack(raw, peer)

    async def scenario() -> None:
        server = MllpServer(slow, port=0)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(frame(message("BUSY")))
        await writer.drain()
        await asyncio.wait_for(started.wait(), TIMEOUT)
        await asyncio.wait_for(server.stop(timeout=TIMEOUT), TIMEOUT)
        ack = await read_frame(reader)  # answered before the connection closed
        assert "MSA|AA|BUSY" in ack
        assert await asyncio.wait_for(idle_reader.read(), TIMEOUT) == b""
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", server.port)
        writer.close()
        idle_writer.close()

    run(scenario)


def test_idle_connections_are_closed() -> None:
    async def scenario() -> None:
        async with MllpServer(echo_ack, port=0, idle_timeout=0.2) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
            writer.close()

    run(scenario)


def test_link_service_handler_applies_and_acks() -> None:
    store = RecordingStore()

    async def scenario() -> None:
        async with MllpServer(acking(LinkService(store)), port=0) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(frame(read("adt_a08.hl7")) + frame("garbage"))
            await writer.drain()
            first, second = await read_frame(reader), await read_frame(reader)
            assert "MSA|AA|MSG-A08-0001|patient updated" in first
            assert "MSA|AR|" in second
            writer.close()

    run(scenario)
    assert [m[2] for m in store.messages] == ["AA", "AR"]


def test_catalog_without_links_answers_ae(tmp_path: Path) -> None:
    links = LinkService(MemoryCatalog([tmp_path], default_registry()))

    async def scenario() -> None:
        async with MllpServer(acking(links), port=0) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(frame(read("adt_a08.hl7")))
            await writer.drain()
            assert "MSA|AE|MSG-A08-0001|" in await read_frame(reader)
            writer.close()

    run(scenario)


# --- the app's listener (lifespan, --mllp-port) with the real SQL catalog ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def mllp_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    port = free_port()
    with sql_lis_client(tmp_path_factory.mktemp("mllp"), mllp_port=port) as client:
        yield client
    with pytest.raises(OSError):  # the lifespan stopped the listener
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_app_listener_orders_over_a_real_socket(mllp_app: Any) -> None:
    port = mllp_app.app.state.slideserver.settings.mllp_port

    async def scenario() -> list[str]:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
        acks = []
        for name in ("orm_o01.hl7", "oml_o21.hl7", "oml_o21.hl7", "adt_a08.hl7"):
            writer.write(frame(read(name)))
            await writer.drain()
            acks.append(await read_frame(reader))
        writer.close()
        await writer.wait_closed()
        return acks

    orm, oml, again, a08 = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert "MSA|AA|MSG-ORM-0001|case created" in orm
    assert "MSA|AA|MSG-OML-0001|case updated" in oml
    assert "MSA|AA|MSG-OML-0001|no change" in again
    assert "MSA|AA|MSG-A08-0001|" in a08
    assert str(hl7.parse(orm).segment("MSH")[9]) == "ACK^O01^ACK"
    case = mllp_app.app.state.slideserver.catalog.get_case("S24-01234")
    assert case.patient.identifier == "MRN-0012345"
    assert [b.id for b in case.specimens[0].blocks] == ["A1", "A2"]


# --- who may send: bind address, allow-list, TLS client certificates, audit ---


def listening_addresses(port: int) -> list[str]:
    """The local addresses of the sockets listening on ``port`` (Linux ``/proc/net/tcp*``)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            if len(raw) == 4:
                found.append(str(ipaddress.IPv4Address(raw[::-1])))
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.append(str(ipaddress.IPv6Address(words)))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux /proc/net/tcp")
def test_serve_binds_mllp_to_loopback_even_when_http_binds_every_address(tmp_path: Path) -> None:
    port = free_port()
    extra = [
        "--host",
        "0.0.0.0",
        "--behind-tls-proxy",
        "--auth",
        "tokens",
        "--mllp-port",
        str(port),
    ]
    with live_server([tmp_path], *extra, scrub_env=True):
        assert listening_addresses(port) == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("flags", "refusal"),
    [
        (["--mllp-host", "0.0.0.0"], "without --mllp-allow"),
        (
            [
                "--mllp-host",
                "192.0.2.2",
                "--mllp-tls-certfile",
                "c.pem",
                "--mllp-tls-keyfile",
                "k.pem",
            ],
            "without --mllp-allow",
        ),
        (["--mllp-allow", "10.1.2.0/33"], "'10.1.2.0/33' is not an address or network"),
        (["--mllp-tls-certfile", "c.pem"], "go together"),
    ],
)
def test_serve_refuses_unsafe_mllp_settings(
    flags: list[str], refusal: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["serve", str(tmp_path), "--auth", "tokens", "--mllp-port", "2575", *flags]
    assert cli_main(args) == 2
    assert refusal in capsys.readouterr().err


def test_non_loopback_mllp_starts_with_an_allow_list_or_client_certificates() -> None:
    assert listener_refusal("0.0.0.0", "10.1.2.0/24", "", "", "") is None
    assert listener_refusal("0.0.0.0", "", "c.pem", "k.pem", "ca.pem") is None
    assert listener_refusal("127.0.0.1", "", "", "", "") is None
    assert listener_refusal("::1", "", "", "", "") is None


def test_the_app_refuses_to_start_mllp_on_an_unprotected_non_loopback_address(
    tmp_path: Path,
) -> None:
    unprotected = sql_lis_client(tmp_path, mllp_port=free_port(), mllp_host="0.0.0.0")
    with pytest.raises(ValueError, match="without --mllp-allow"), unprotected:
        pass


def send_raw(message: str, port: int, source: str = "127.0.0.1") -> bytes:
    """Send one framed message from ``source``; return what came back before the server closed."""
    with socket.create_connection(("127.0.0.1", port), TIMEOUT, (source, 0)) as sock:
        received = b""
        try:
            sock.sendall(frame(message))
            while not received.endswith(END):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except OSError:  # reset by the server
            pass
        return received


def audit_rows(client: Any, subject: str) -> list[Any]:
    return list(client.app.state.security.audit.query(AuditQuery(subject=subject)))


def test_a_peer_outside_the_allow_list_gets_nothing_applied(tmp_path: Path) -> None:
    port = free_port()
    with sql_lis_client(tmp_path, mllp_port=port, mllp_allow="127.0.0.2") as client:
        state = client.app.state.slideserver
        assert send_raw(read("orm_o01.hl7"), port, source="127.0.0.1") == b""
        assert state.catalog.get_case("S24-01234") is None
        assert state.metrics.mllp["refused"] == 1
        assert audit_rows(client, "mllp:127.0.0.1") == []

        ack = send_raw(read("orm_o01.hl7"), port, source="127.0.0.2").decode()
        assert "MSA|AA|MSG-ORM-0001|case created" in ack
        assert state.catalog.get_case("S24-01234") is not None
        assert state.metrics.mllp["accepted"] == 1


def test_an_applied_message_is_audited_under_the_peer_with_its_case_and_patient(
    tmp_path: Path,
) -> None:
    port = free_port()
    with sql_lis_client(tmp_path, mllp_port=port) as client:
        with hl7.client.MLLPClient("127.0.0.1", port) as mllp:
            ack = mllp.send_message(read("orm_o01.hl7")).decode()
        assert "MSA|AA|MSG-ORM-0001|case created" in ack
        rows = audit_rows(client, "mllp:127.0.0.1")
    assert [(r.kind, r.status) for r in reversed(rows)] == [("attempt", None), ("request", 200)]
    for row in rows:
        assert (row.role, row.method, row.action) == ("lis", "MLLP", "MLLP hl7v2")
        assert (row.case_id, row.patient_id) == ("S24-01234", "MRN-0012345")
        assert (row.client, row.request_id) == ("127.0.0.1", "MSG-ORM-0001")


def test_a_message_is_not_applied_when_its_audit_row_cannot_be_written(tmp_path: Path) -> None:
    port = free_port()
    with sql_lis_client(tmp_path, mllp_port=port) as client:
        audit = client.app.state.security.audit

        def unwritable(event: Any) -> None:
            raise AuditUnavailable("down")

        audit.write = unwritable
        ack = send_raw(read("orm_o01.hl7"), port).decode()
        assert "MSA|AE|MSG-ORM-0001|the audit trail cannot be written" in ack
        assert client.app.state.slideserver.catalog.get_case("S24-01234") is None


# --- MLLP over TLS with client certificates ---


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey],
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer[0]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer[1], hashes.SHA256())


def _write_pem(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate ``CN=lis-gateway``."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test-ca", ca_key, ("test-ca", ca_key), ca=True)
    _write_pem(folder / "ca", ca, ca_key)
    for name, cn, server in (("server", "slideserver", True), ("client", "lis-gateway", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        _write_pem(folder / name, _certificate(cn, key, ("test-ca", ca_key), server=server), key)
    return folder


def tls_send(port: int, pki: Path, message: str, *, with_certificate: bool) -> bytes:
    """Send one framed message over TLS; return what came back before the connection ended."""
    context = ssl.create_default_context(cafile=pki / "ca.crt")
    if with_certificate:
        context.load_cert_chain(pki / "client.crt", pki / "client.key")
    received = b""
    with socket.create_connection(("127.0.0.1", port), TIMEOUT) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(frame(message))
                while not received.endswith(END):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received += chunk
        except (ssl.SSLError, OSError):  # the server refused the handshake
            pass
    return received


def test_tls_with_a_client_certificate_applies_and_audits_under_its_cn(
    tmp_path: Path, pki: Path
) -> None:
    port = free_port()
    tls: dict[str, Any] = {
        "mllp_tls_certfile": str(pki / "server.crt"),
        "mllp_tls_keyfile": str(pki / "server.key"),
        "mllp_tls_client_ca": str(pki / "ca.crt"),
    }
    with sql_lis_client(tmp_path, mllp_port=port, **tls) as client:
        state = client.app.state.slideserver
        refused = tls_send(port, pki, read("orm_o01.hl7"), with_certificate=False)
        assert refused == b""
        assert state.catalog.get_case("S24-01234") is None
        assert state.metrics.mllp["tls_failed"] == 1

        ack = tls_send(port, pki, read("orm_o01.hl7"), with_certificate=True).decode()
        assert "MSA|AA|MSG-ORM-0001|case created" in ack
        assert state.catalog.get_case("S24-01234") is not None
        rows = audit_rows(client, "mllp:cn=lis-gateway")
    assert [r.kind for r in reversed(rows)] == ["attempt", "request"]
    assert rows[0].client == "127.0.0.1"
