"""An asyncio MLLP listener: HL7 v2 messages framed ``0x0B ... 0x1C 0x0D``, one ACK per message.

Messages on one connection are handled in order, each answered before the next is read (original
acknowledgement mode). A message larger than ``max_message_bytes`` is answered ``AR`` and the
connection closed, since the framing cannot be trusted after it. Idle connections are closed after
``idle_timeout`` seconds. :meth:`MllpServer.stop` stops accepting, lets messages being handled
finish (up to a timeout) and closes every connection.

MLLP itself has no authentication, so the listener decides who may talk to it: a peer whose
address is outside the allow-list (loopback only by default) is closed before anything is read;
with TLS (MLLP over TLS, as IHE ITI TF-2 "Secure Transport" profiles it) and a client CA, a peer
must present a certificate that CA signed. The handler is told the :class:`Peer` (its address and
certificate CN) so that what it applies is audited under the peer's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from slideserver.lis.hl7v2.ack import ERROR, REJECT, build_ack
from slideserver.lis.hl7v2.parse import decode_message, read_header

log = logging.getLogger("slideserver.lis.mllp")

START = b"\x0b"
END = b"\x1c\x0d"
MAX_MESSAGE_BYTES = 1 << 20
HANDSHAKE_TIMEOUT = 10.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv6Network("::1/128"),
)
"""The default allow-list: this machine only."""


@dataclass(frozen=True)
class Peer:
    """Who sent a message: the connection's address and, with client certificates, their CN."""

    address: str
    common_name: str | None = None

    @property
    def subject(self) -> str:
        """The audit subject: ``mllp:cn=NAME`` with a client certificate, else ``mllp:ADDRESS``."""
        return f"mllp:cn={self.common_name}" if self.common_name else f"mllp:{self.address}"


Handler = Callable[[str, Peer], Awaitable[str]]
"""Takes one ER7 message and its sender, returns its ACK (the app's applies and audits it)."""
Observer = Callable[[str], None]
"""Told each connection's outcome (``accepted``, ``refused``, ``tls_failed``), for metrics."""


def frame(message: str) -> bytes:
    """Wrap one message (segments separated by ``\\r``) in MLLP framing, UTF-8 encoded."""
    return START + message.encode("utf-8") + END


# --- who may connect ---


def parse_allow_list(text: str) -> tuple[Network, ...]:
    """Parse ``10.1.2.0/24,127.0.0.1`` (addresses or networks); raise ValueError if bad."""
    networks: list[Network] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"--mllp-allow: {item[:60]!r} is not an address or network") from None
    return tuple(networks)


def is_loopback_host(host: str) -> bool:
    """Tell whether binding ``host`` keeps the listener on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def peer_address(peername: Any) -> str:
    """The peer's IP address as text: IPv4-mapped IPv6 addresses as IPv4, no zone."""
    host = str(peername[0]) if isinstance(peername, tuple) and peername else ""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host[:100]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def is_allowed(address: str, allow: Sequence[Network] | None) -> bool:
    """Tell whether ``address`` is in ``allow`` (``None``: any address)."""
    if allow is None:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in allow)


def listener_refusal(
    host: str, allow: str, certfile: str, keyfile: str, client_ca: str
) -> str | None:
    """Return why the MLLP listener must not start with these settings, or ``None``.

    A non-loopback bind needs an explicit allow-list or client certificates: otherwise anyone who
    can reach the port could create cases and patients (TLS without client certificates encrypts
    but authenticates nobody).
    """
    try:
        parse_allow_list(allow)
    except ValueError as exc:
        return str(exc)
    if bool(certfile) != bool(keyfile):
        return "--mllp-tls-certfile and --mllp-tls-keyfile go together"
    if client_ca and not certfile:
        return "--mllp-tls-client-ca needs --mllp-tls-certfile and --mllp-tls-keyfile"
    if not is_loopback_host(host) and not allow.strip() and not client_ca:
        return (
            f"refusing to listen for MLLP on {host[:60]} without --mllp-allow (the LIS "
            "addresses) or TLS client certificates (--mllp-tls-client-ca): anyone who can reach "
            "the port could create cases and patients"
        )
    return None


def allowed_networks(allow: str, client_ca: str) -> tuple[Network, ...] | None:
    """The peers to accept: ``allow`` when given; else any address when a client certificate is
    required (the certificate decides), else loopback only."""
    networks = parse_allow_list(allow)
    if networks:
        return networks
    return None if client_ca else LOOPBACK


def tls_context(certfile: str, keyfile: str, client_ca: str = "") -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or later); with ``client_ca``, client certificates signed by
    that CA are required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    if client_ca:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def common_name(peercert: Any) -> str | None:
    """The subject CN of a verified peer certificate (``SSLSocket.getpeercert()``), or ``None``."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and value:
                return str(value)[:100]
    return None


def _ignore(_outcome: str) -> None:
    return None


class MllpServer:
    """An MLLP listener answering each framed message of an admitted peer with ``handler``'s ACK."""

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow: Sequence[Network] | None = LOOPBACK,
        tls: ssl.SSLContext | None = None,
        observe: Observer = _ignore,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        idle_timeout: float = 300.0,
    ) -> None:
        self.handler = handler
        self.host = host
        self.requested_port = port
        self.allow = None if allow is None else tuple(allow)
        """Peer networks accepted; ``None``: any (only sensible when client certificates are
        required)."""
        self.tls = tls
        self.observe = observe
        self.max_message_bytes = max_message_bytes
        self.idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], bool] = {}
        """Connection task -> whether it is handling a message right now."""
        self._closing = False

    @property
    def port(self) -> int:
        """The bound port (the OS's choice when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            return self.requested_port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and start accepting connections."""
        self._server = await asyncio.start_server(
            self._connection,
            self.host,
            self.requested_port,
            limit=self.max_message_bytes + len(END) + 1,
        )
        log.info("MLLP listening on port %d%s", self.port, " (TLS)" if self.tls is not None else "")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting; let messages in progress finish (up to ``timeout``); close the rest."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task, busy in list(self._connections.items()):
            if not busy:
                task.cancel()
        pending = set(self._connections)
        if pending:
            _done, late = await asyncio.wait(pending, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
        log.info("MLLP listener stopped")

    async def __aenter__(self) -> MllpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing:
            writer.close()
            return
        self._connections[task] = False
        try:
            peer = await self._admit(writer)
            if peer is not None:
                await self._serve(task, peer, reader, writer)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, OSError) as exc:
            log.info("MLLP connection dropped: %s", type(exc).__name__)
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=1.0)

    async def _admit(self, writer: asyncio.StreamWriter) -> Peer | None:
        """Return the peer when its address is allowed and its TLS handshake (if any) succeeds."""
        address = peer_address(writer.get_extra_info("peername"))
        if not is_allowed(address, self.allow):
            log.warning("MLLP connection from %s refused: not in the allow-list", address)
            self.observe("refused")
            return None
        if self.tls is None:
            self.observe("accepted")
            return Peer(address)
        try:
            await writer.start_tls(self.tls, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            log.warning("MLLP TLS handshake with %s failed: %s", address, str(reason)[:80])
            self.observe("tls_failed")
            return None
        self.observe("accepted")
        return Peer(address, common_name(writer.get_extra_info("peercert")))

    async def _serve(
        self,
        task: asyncio.Task[None],
        peer: Peer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        while not self._closing:
            try:
                data = await asyncio.wait_for(reader.readuntil(END), self.idle_timeout)
            except asyncio.IncompleteReadError:
                return  # the peer closed (a partial frame without its end is dropped)
            except TimeoutError:
                return
            except asyncio.LimitOverrunError:
                reason = f"message larger than {self.max_message_bytes} bytes"
                writer.write(frame(build_ack(None, REJECT, reason, error_code=207)))
                await writer.drain()
                log.warning("MLLP message rejected: larger than %d bytes", self.max_message_bytes)
                return
            payload = data[: -len(END)]
            start = payload.find(START)
            if start >= 0:
                payload = payload[start + 1 :]
            if len(payload) > self.max_message_bytes:
                writer.write(frame(build_ack(None, REJECT, "message too large", error_code=207)))
                await writer.drain()
                return
            self._connections[task] = True
            try:
                ack = await self.handler(decode_message(payload), peer)
            except Exception as exc:  # a handler bug must not leave the sender without an ACK
                log.error("MLLP handler failed: %s", type(exc).__name__)
                ack = build_ack(
                    read_header(decode_message(payload)), ERROR, "internal error", error_code=207
                )
            finally:
                self._connections[task] = False
            writer.write(frame(ack))
            await writer.drain()


__all__ = [
    "END",
    "LOOPBACK",
    "MAX_MESSAGE_BYTES",
    "START",
    "Handler",
    "MllpServer",
    "Network",
    "Observer",
    "Peer",
    "allowed_networks",
    "common_name",
    "frame",
    "is_allowed",
    "is_loopback_host",
    "listener_refusal",
    "parse_allow_list",
    "peer_address",
    "tls_context",
]
