"""Both copy paths (raw sockets and portable), with Unix and TCP sockets in each position."""

import ctypes
import mmap
import os
import socket
import struct
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from tailscale_wsl2.net.pump import FastEnd, OneWay, SpareBuffers, Spares
from tailscale_wsl2.net.sockets import COPY_CHUNK_SIZE, PEER_GONE, RawSocketStream
from tests.support.sockets import (
    SocketPairMaker,
    fill,
    read_to_eof,
    send_then_eof,
    shrink_buffers,
    tcp_pair,
    unix_pair,
)

StreamMaker = Callable[[socket.socket], trio.abc.HalfCloseableStream]


def trio_stream(sock: socket.socket) -> trio.abc.HalfCloseableStream:
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


@pytest.fixture(params=[RawSocketStream, trio_stream], ids=["raw", "portable"])
def copy_path(request: pytest.FixtureRequest) -> StreamMaker:
    """How the relay's ends are wrapped, which picks the copy path."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=[unix_pair, tcp_pair], ids=["from-unix", "from-tcp"])
def source_pair(request: pytest.FixtureRequest) -> SocketPairMaker:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=[unix_pair, tcp_pair], ids=["to-unix", "to-tcp"])
def destination_pair(request: pytest.FixtureRequest) -> SocketPairMaker:
    return request.param  # type: ignore[no-any-return]


@asynccontextmanager
async def one_way(
    source_pair: SocketPairMaker,
    destination_pair: SocketPairMaker,
    wrap: StreamMaker = RawSocketStream,
    spares: Spares | None = None,
) -> AsyncIterator[tuple[trio.socket.SocketType, trio.socket.SocketType, trio.Nursery]]:
    """writer -> [src relay end] OneWay.copy [dst relay end] -> reader."""
    writer, relay_in = source_pair()
    relay_out, reader = destination_pair()
    if source_pair is destination_pair is unix_pair:
        # Small buffers force partial transfers and EAGAIN on both sides (not
        # on TCP, where a tiny window meets delayed ACKs and crawls).
        shrink_buffers(writer, relay_in, relay_out, reader)
    writer_t, reader_t = (
        trio.socket.from_stdlib_socket(writer),
        trio.socket.from_stdlib_socket(reader),
    )
    relay_in_stream, relay_out_stream = wrap(relay_in), wrap(relay_out)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(OneWay(relay_in_stream, relay_out_stream, spares or Spares()).copy)
            yield writer_t, reader_t, nursery
    finally:
        for sock in (writer_t, reader_t):
            sock.close()
        for stream in (relay_in_stream, relay_out_stream):
            await stream.aclose()


async def test_bytes_and_eof_arrive_exactly(
    copy_path: StreamMaker, source_pair: SocketPairMaker, destination_pair: SocketPairMaker
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    async with one_way(source_pair, destination_pair, copy_path) as (writer, reader, nursery):
        nursery.start_soon(send_then_eof, writer, data)
        with trio.fail_after(30):
            assert await read_to_eof(reader) == data  # EOF passed on as a half-close


async def test_a_slow_reader_gets_everything(copy_path: StreamMaker) -> None:
    data = os.urandom(512 * 1024)
    async with one_way(unix_pair, unix_pair, copy_path) as (writer, reader, nursery):
        nursery.start_soon(send_then_eof, writer, data)
        received = bytearray()
        with trio.fail_after(30):
            while chunk := await reader.recv(1000):
                received += chunk
                await trio.sleep(0)  # the relay sees a full destination again and again
    assert bytes(received) == data


async def test_a_reset_destination_ends_the_copy_as_peer_gone(copy_path: StreamMaker) -> None:
    writer, relay_in = unix_pair()
    relay_out, reader = tcp_pair()
    # SO_LINGER 0: close() sends RST, as a crashed client's kernel would.
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reader.close()
    writer.setblocking(False)
    writer.send(b"x" * 65536)
    with pytest.raises(PEER_GONE), trio.fail_after(10):
        await OneWay(copy_path(relay_in), copy_path(relay_out), Spares()).copy()
    for sock in (writer, relay_in, relay_out):
        sock.close()


@pytest.fixture
def spare_buffers() -> SpareBuffers:
    return SpareBuffers(keep=1)


async def test_an_idle_connection_holds_no_buffer(spare_buffers: SpareBuffers) -> None:
    spares = Spares(buffers=spare_buffers)
    async with one_way(unix_pair, unix_pair, spares=spares) as (writer, reader, nursery):
        await trio.testing.wait_all_tasks_blocked()
        [idle] = spare_buffers._buffers  # tried at once, found nothing, gave it back
        await writer.send(b"hello")
        assert await reader.recv(5) == b"hello"
        await trio.testing.wait_all_tasks_blocked()
        assert spare_buffers._buffers == [idle]  # used, and given back once sent on
        writer.shutdown(socket.SHUT_WR)
        assert await reader.recv(5) == b""
        nursery.cancel_scope.cancel()
    assert spare_buffers._buffers == [idle]  # the same one, reused


async def test_a_buffer_is_held_only_while_its_bytes_wait_for_a_full_peer(
    spare_buffers: SpareBuffers,
) -> None:
    data = os.urandom(1024 * 1024)
    spares = Spares(buffers=spare_buffers)
    async with one_way(unix_pair, unix_pair, spares=spares) as (writer, reader, nursery):
        nursery.start_soon(send_then_eof, writer, data)
        await trio.testing.wait_all_tasks_blocked()
        assert spare_buffers._buffers == []  # the reader reads nothing: one buffer is held
        with trio.fail_after(30):
            assert await read_to_eof(reader) == data
        await trio.testing.wait_all_tasks_blocked()
        assert len(spare_buffers._buffers) == 1  # and given back when the copy ends


def resident_pages(buffer: object) -> int:
    """How many of `buffer`'s pages are in RAM (Linux `mincore`)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    page = mmap.PAGESIZE
    start = ctypes.addressof(ctypes.c_char.from_buffer(buffer))  # type: ignore[arg-type]
    aligned = start - start % page
    length = start + len(buffer) - aligned  # type: ignore[arg-type]
    flags = ctypes.create_string_buffer((length + page - 1) // page)
    assert libc.mincore(aligned, length, flags) == 0, os.strerror(ctypes.get_errno())
    return sum(flag & 1 for flag in flags.raw)


@pytest.mark.skipif(sys.platform != "linux", reason="mincore is Linux's")
async def test_a_buffer_holds_memory_only_where_bytes_landed() -> None:
    # A half that relayed a few small requests keeps a spare buffer: it should not
    # cost the whole 256 KiB of RAM (the idle memory target, docs/benchmarks.md).
    buffer = SpareBuffers(keep=1).take()
    writer, relay_in = unix_pair()
    with writer, relay_in:
        writer.send(b"GET /localapi/v0/status HTTP/1.1\r\n\r\n")
        assert relay_in.recv_into(buffer) == 36
    assert resident_pages(buffer) <= 2


@pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets")
def test_a_unix_socket_takes_a_whole_chunk_in_one_send() -> None:
    # Linux's default send buffer takes 214 KiB of a 256 KiB chunk, and the rest
    # costs a wait and another send (strace: +40 % system calls per GiB).
    near, far = unix_pair()
    with near, far:
        stream = RawSocketStream(near)
        assert stream.socket.send(bytes(COPY_CHUNK_SIZE)) == COPY_CHUNK_SIZE


async def test_forward_ready_sends_what_is_waiting_without_a_checkpoint(
    source_pair: SocketPairMaker, destination_pair: SocketPairMaker
) -> None:
    writer, relay_in = source_pair()
    relay_out, reader = destination_pair()
    request = b"GET /localapi/v0/status HTTP/1.1\r\n\r\n"
    writer.sendall(request)
    reader.settimeout(10)
    # Not a coroutine: it cannot wait, so the bytes are on their way when it returns.
    assert OneWay(RawSocketStream(relay_in), RawSocketStream(relay_out), Spares()).forward_ready()
    assert reader.recv(100) == request
    for sock in (writer, relay_in, relay_out, reader):
        sock.close()


def test_both_directions_of_a_connection_hold_no_end_descriptions_once_set_up() -> None:
    """The second direction reuses the first's descriptions of the ends; afterwards neither
    keeps them (an idle connection would hold them for its life)."""
    near, far = unix_pair()
    client, upstream = RawSocketStream(near), RawSocketStream(far)
    forward = OneWay(client, upstream, Spares())
    back = forward.reversed()
    held = [
        value
        for value in (*vars(forward).values(), *vars(back).values())
        if isinstance(value, tuple) and any(isinstance(end, FastEnd) for end in value)
    ]
    assert held == []
    near.close()
    far.close()


async def test_forward_ready_leaves_an_eof_for_the_copy_to_pass_on(copy_path: StreamMaker) -> None:
    writer, relay_in = unix_pair()
    relay_out, reader = unix_pair()
    writer.shutdown(socket.SHUT_WR)
    one_way = OneWay(copy_path(relay_in), copy_path(relay_out), Spares())
    assert one_way.forward_ready()
    with trio.fail_after(10):
        await one_way.copy()
    reader.settimeout(10)
    assert reader.recv(100) == b""  # the half-close arrived
    for sock in (writer, relay_in, relay_out, reader):
        sock.close()


async def test_forward_ready_hands_what_a_full_destination_refused_to_the_copy(
    destination_pair: SocketPairMaker,
) -> None:
    writer, relay_in = unix_pair()
    relay_out, reader = destination_pair()
    one_way = OneWay(
        RawSocketStream(relay_in), RawSocketStream(relay_out), Spares()
    )  # (buffer size set)
    already_queued = fill(relay_out)
    request = os.urandom(200_000)
    writer.sendall(request[:100_000])  # the rest comes while the copy runs
    assert not one_way.forward_ready()  # the destination was full: nothing, or only part, went
    reader_t = trio.socket.from_stdlib_socket(reader)
    writer_t = trio.socket.from_stdlib_socket(writer)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one_way.copy)
            nursery.start_soon(send_then_eof, writer_t, request[100_000:])
            received = await read_to_eof(reader_t)
    assert received[:already_queued] == b"\xff" * already_queued
    assert received[already_queued:] == request  # in order, nothing lost or doubled
    for sock in (writer_t, relay_in, relay_out, reader_t):
        sock.close()


async def test_forward_ready_reports_a_reset_source_as_peer_gone() -> None:
    writer, relay_in = tcp_pair()
    relay_out, reader = unix_pair()
    writer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()  # RST, which loopback delivers before close() returns
    one_way = OneWay(RawSocketStream(relay_in), RawSocketStream(relay_out), Spares())
    assert not one_way.forward_ready()  # does not raise: the accepting task runs it
    with pytest.raises(PEER_GONE) as raised:
        await one_way.copy()
    assert isinstance(raised.value.__cause__, ConnectionResetError)  # kept for --verbose
    for sock in (relay_in, relay_out, reader):
        sock.close()
