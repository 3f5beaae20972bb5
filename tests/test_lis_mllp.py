"""MLLP over real 127.0.0.1 sockets: framing, one ACK per message, size bound, graceful stop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import hl7
import pytest

from slideserver.catalog.memory import MemoryCatalog
from slideserver.lis.mllp import END, START, Handler, MllpServer, Peer, frame
from slideserver.readers.registry import default_registry
from slideserver.services.links import LinkService
from tests.fixtures.lis.support import RecordingStore, read, sql_lis_client

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
