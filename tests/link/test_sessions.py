"""Sessions on a link: framing, both copy paths, the end of a session, and links reused."""

import os
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import pytest
import trio
import trio.testing

from tailscale_wsl2.link.admission import authenticated_connector
from tailscale_wsl2.link.handshake import accept_link
from tailscale_wsl2.link.sealed import (
    SealedLink,
    SealedSession,
    new_scratch_buffers,
    sealed_sessions,
)
from tailscale_wsl2.link.sessions import (
    GONE,
    HEADER,
    MAX_FRAME,
    NO_AUTH_HERE,
    SEALED_LINK_PREFIX,
    SESSION_MODE,
    LinkOutOfStep,
    LinkSession,
    link_sessions,
    session_at_once,
    session_connector,
    start_session_mode,
)
from tailscale_wsl2.link.warm import SPARE_IDLE_SECONDS, WarmLinks
from tailscale_wsl2.net.connect import Hop, hop_connector, open_stream
from tailscale_wsl2.net.endpoints import TcpEndpoint, UnixEndpoint
from tailscale_wsl2.net.pump import OneWay, Spares
from tailscale_wsl2.net.sockets import (
    PEER_GONE,
    RawSocketListener,
    RawSocketStream,
    listening_socket,
)
from tailscale_wsl2.plan.commands import link_fixes
from tailscale_wsl2.plan.halves import Options
from tailscale_wsl2.relay.core import Relay
from tests.support.sockets import (
    SocketPairMaker,
    fill,
    read_to_eof,
    send_then_eof,
    shrink_buffers,
    tcp_pair,
    unix_pair,
)


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


@pytest.fixture
def link_pair() -> Iterator[tuple[LinkSession[RawSocketStream], socket.socket]]:
    """A session on one end of a link; the other end is the test's, blocking."""
    near, far = unix_pair()
    yield LinkSession(RawSocketStream(near)), far
    near.close()
    far.close()


def read_frames(sock: socket.socket) -> list[bytes]:
    """Frames from a blocking socket up to and including the length-0 one."""
    frames = []
    while True:
        header = sock.recv(HEADER.size, socket.MSG_WAITALL)
        (length,) = HEADER.unpack(header)
        frames.append(sock.recv(length, socket.MSG_WAITALL) if length else b"")
        if not length:
            return frames


async def test_frames_out_and_in_end_the_session_cleanly(
    link_pair: tuple[LinkSession[RawSocketStream], socket.socket],
) -> None:
    session, far = link_pair
    await session.send_all(b"hello")
    await session.send_all(b"")  # nothing to send is not the end
    await session.send_eof()
    assert read_frames(far) == [b"hello", b""]
    assert not session.reusable  # the other direction has not ended
    far.sendall(frame(b"answer") + frame(b""))
    assert await session.receive_some() == b"answer"
    assert await session.receive_some() == b""
    assert session.reusable


async def test_a_header_split_across_reads_is_put_together(
    link_pair: tuple[LinkSession[RawSocketStream], socket.socket],
) -> None:
    session, far = link_pair
    buffer = bytearray(64)
    wire = frame(b"split") + frame(b"")
    for byte in wire[: HEADER.size]:
        far.send(bytes([byte]))
        with pytest.raises(BlockingIOError):
            session.try_receive_into(buffer)
    far.sendall(wire[HEADER.size :])
    assert session.try_receive_into(buffer) == 5
    assert buffer[:5] == b"split"
    assert session.try_receive_into(buffer) == 0
    assert session.try_receive_into(buffer) == 0  # stays ended


async def test_a_session_begins_on_part_of_a_header_and_not_on_a_closed_link() -> None:
    near, far = unix_pair()
    link = RawSocketStream(near)
    wire = frame(b"hello")
    far.sendall(wire[:2])
    first = LinkSession(link)
    assert await first.begin()  # a session starts, though its header is not all here
    far.sendall(wire[2:] + HEADER.pack(0))
    assert await first.receive_some() == b"hello"
    assert await first.receive_some() == b""
    far.close()  # the WSL2 half closes the idle link
    assert not await LinkSession(link).begin()  # no session: no upstream to open
    near.close()


async def test_a_read_stops_at_the_end_of_its_frame(
    link_pair: tuple[LinkSession[RawSocketStream], socket.socket],
) -> None:
    session, far = link_pair
    far.sendall(frame(b"first") + frame(b"second"))
    buffer = bytearray(64)
    assert buffer[: session.try_receive_into(buffer)] == b"first"
    assert buffer[: session.try_receive_into(buffer)] == b"second"


async def test_the_next_header_comes_along_with_the_end_of_a_payload(
    link_pair: tuple[LinkSession[RawSocketStream], socket.socket],
) -> None:
    session, far = link_pair
    far.sendall(frame(b"first") + frame(b"second") + frame(b""))
    buffer = bytearray(64)
    assert buffer[: session.try_receive_into(buffer)] == b"first"
    # The second frame's header left the link with the first payload: no `recv` of its own.
    assert session.link.socket.recv(64, socket.MSG_PEEK) == b"second" + HEADER.pack(0)
    assert buffer[: session.try_receive_into(buffer)] == b"second"
    with pytest.raises(BlockingIOError):  # the end frame's header came along too
        session.link.socket.recv(64, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    assert session.try_receive_into(buffer) == 0


@pytest.mark.parametrize(
    ("wire", "delivered"),
    [(frame(b"complete")[:-3], b"compl"), (b"\x00\x00", b"")],
    ids=["inside-the-payload", "inside-the-header"],
)
async def test_a_link_closed_inside_a_frame_is_a_broken_session(
    link_pair: tuple[LinkSession[RawSocketStream], socket.socket], wire: bytes, delivered: bytes
) -> None:
    session, far = link_pair
    far.sendall(wire)
    far.close()
    if delivered:
        assert await session.receive_some(len(delivered)) == delivered
    with pytest.raises(
        trio.BrokenResourceError, match=r"^the link closed in the middle of a frame$"
    ):
        await session.receive_some()


async def test_a_link_closed_between_frames_ends_the_session_and_the_link(
    link_pair: tuple[LinkSession[RawSocketStream], socket.socket],
) -> None:
    session, far = link_pair
    far.sendall(frame(b"502 and goodbye"))
    far.close()
    assert await session.receive_some() == b"502 and goodbye"
    assert await session.receive_some() == b""
    with pytest.raises(trio.BrokenResourceError):
        await session.send_eof()  # nobody is left to hear it
    assert not session.reusable


async def test_closing_a_finished_session_recycles_the_link() -> None:
    near, far = unix_pair()
    recycled: list[RawSocketStream] = []
    link = RawSocketStream(near)
    session = LinkSession(link, recycled.append)
    far.sendall(frame(b""))
    assert await session.receive_some() == b""
    await session.send_eof()
    await session.aclose()
    assert recycled == [link]
    assert near.fileno() != -1
    far.close()
    near.close()


async def test_closing_an_unfinished_session_closes_the_link() -> None:
    near, far = unix_pair()
    recycled: list[RawSocketStream] = []
    session = LinkSession(RawSocketStream(near), recycled.append)
    await session.send_eof()  # the other direction never ended
    await session.aclose()
    assert recycled == []
    assert near.fileno() == -1
    assert read_frames(far) == [b""]
    assert far.recv(1) == b""
    far.close()


async def test_gone_ends_the_session_and_finish_answers_it(
    link_pair: tuple[LinkSession[RawSocketStream], socket.socket],
) -> None:
    session, far = link_pair
    far.sendall(frame(b"last words") + HEADER.pack(GONE))
    assert await session.receive_some() == b"last words"
    assert not session.abandoned
    assert await session.receive_some() == b""
    assert session.abandoned
    assert await session.receive_some() == b""  # stays ended
    assert not session.reusable
    await session.finish()
    assert read_frames(far) == [b""]
    assert session.reusable


@pytest.mark.parametrize(
    ("hang_up", "end"), [(True, GONE), (False, 0)], ids=["hung-up", "half-closed"]
)
async def test_a_source_that_hung_up_ends_its_session_with_gone(
    link_pair: tuple[LinkSession[RawSocketStream], socket.socket], hang_up: bool, end: int
) -> None:
    """GONE after a client that closed its connection; a plain end after a half-close."""
    session, far = link_pair
    client, relay_end = unix_pair()
    client.sendall(b"request")
    if hang_up:
        client.close()
    else:
        client.shutdown(socket.SHUT_WR)
    with trio.fail_after(10):
        await OneWay(RawSocketStream(relay_end), session, Spares()).copy()
    assert far.recv(64) == frame(b"request") + HEADER.pack(end)
    relay_end.close()
    if not hang_up:
        client.close()


async def test_a_frame_cut_off_midway_leaves_the_link_unusable() -> None:
    near, far = unix_pair()
    shrink_buffers(near, far)
    far.sendall(HEADER.pack(GONE))
    recycled: list[RawSocketStream] = []
    session = LinkSession(RawSocketStream(near), recycled.append)
    with trio.move_on_after(0.2):
        await session.send_all(b"x" * 1024 * 1024)  # nobody reads: stuck midway
    assert await session.receive_some() == b""
    assert session.abandoned
    await session.aclose()  # no end frame can follow half a frame
    assert recycled == []
    assert near.fileno() == -1
    far.close()


def session_on_a_full_link() -> tuple[
    LinkSession[RawSocketStream], socket.socket, list[RawSocketStream], int
]:
    """A session on a link whose send buffer is full; the test's end of the link,
    the links given back, and how many filler bytes wait in the link."""
    near, far = unix_pair()
    recycled: list[RawSocketStream] = []
    session = LinkSession(RawSocketStream(near), recycled.append)
    return session, far, recycled, fill(near)


async def test_a_frame_the_link_takes_only_in_part_is_finished_before_anything_else() -> None:
    writer, relay_in = unix_pair()
    session, far, recycled, already_queued = session_on_a_full_link()
    request = os.urandom(50_000)
    writer.sendall(request)
    writer.shutdown(socket.SHUT_WR)
    one_way = OneWay(RawSocketStream(relay_in), session, Spares())
    assert not one_way.forward_ready()  # the link was full: the frame waits, in part or whole
    far.setblocking(True)
    assert far.recv(already_queued, socket.MSG_WAITALL) == b"\xff" * already_queued
    with trio.fail_after(10):
        await one_way.copy()
    assert b"".join(read_frames(far)) == request  # whole frames, in order, then the end
    far.sendall(HEADER.pack(0))
    assert await session.receive_some() == b""
    await session.aclose()
    assert recycled == [session.link]  # back in step: the link carries the next session
    for sock in (writer, relay_in, far, session.socket):
        sock.close()


async def test_a_link_left_with_part_of_a_frame_is_not_reused() -> None:
    writer, relay_in = unix_pair()
    session, far, recycled, _ = session_on_a_full_link()
    writer.sendall(b"x" * 1000)
    assert not OneWay(RawSocketStream(relay_in), session, Spares()).forward_ready()
    far.sendall(HEADER.pack(GONE))  # the other half gives the session up meanwhile
    with trio.fail_after(5):
        assert await session.receive_some() == b""
        await session.aclose()  # no end frame can follow part of a frame
    assert recycled == []
    assert session.socket.fileno() == -1
    for sock in (writer, relay_in, far):
        sock.close()


# --- the pump's paths into and out of a session -----------------------------------------------


def tight_link() -> tuple[socket.socket, LinkSession[RawSocketStream], trio.socket.SocketType]:
    """A session on a link with small buffers (partial transfers and EAGAIN on the link
    side), and the test's end of the link."""
    near, far = unix_pair()
    shrink_buffers(near, far)
    return near, LinkSession(RawSocketStream(near)), trio.socket.from_stdlib_socket(far)


@pytest.mark.parametrize("pair", [unix_pair, tcp_pair], ids=["unix", "tcp"])
async def test_fast_path_frames_a_socket_into_a_session(pair: SocketPairMaker) -> None:
    """raw socket -> session: payload in the buffer's headroom, EOF as a length-0 frame."""
    writer, relay_in = pair()
    near, session, far_t = tight_link()
    data = os.urandom(2 * 1024 * 1024 + 3)
    writer_t = trio.socket.from_stdlib_socket(writer)
    received = bytearray()

    async def read_frames_to_end() -> None:
        pending = bytearray()
        while True:
            pending += await far_t.recv(65536)
            while len(pending) >= HEADER.size:
                (length,) = HEADER.unpack_from(pending)
                if len(pending) < HEADER.size + length:
                    break
                if not length:
                    return
                received.extend(pending[HEADER.size : HEADER.size + length])
                del pending[: HEADER.size + length]

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(OneWay(RawSocketStream(relay_in), session, Spares()).copy)
            nursery.start_soon(send_then_eof, writer_t, data)
            await read_frames_to_end()
    assert bytes(received) == data
    for sock in (writer_t, far_t, relay_in, near):
        sock.close()


@pytest.mark.parametrize("pair", [unix_pair, tcp_pair], ids=["unix", "tcp"])
async def test_fast_path_unframes_a_session_into_a_socket(pair: SocketPairMaker) -> None:
    """session -> raw socket: frames of any size, split anywhere, then the half-close."""
    relay_out, reader = pair()
    near, session, far_t = tight_link()
    chunks = [os.urandom(size) for size in (1, 70_000, 5, 300_000, 65536)]
    wire = b"".join(frame(chunk) for chunk in chunks) + frame(b"")
    reader_t = trio.socket.from_stdlib_socket(reader)

    async def dribble() -> None:
        for start in range(0, len(wire), 7777):  # splits headers and payloads alike
            piece = memoryview(wire)[start : start + 7777]
            while piece:
                piece = piece[await far_t.send(piece) :]

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(OneWay(session, RawSocketStream(relay_out), Spares()).copy)
            nursery.start_soon(dribble)
            assert await read_to_eof(reader_t) == b"".join(chunks)
    assert not session.reusable  # only the incoming direction has ended
    await session.send_eof()
    assert await far_t.recv(HEADER.size) == HEADER.pack(0)
    assert session.reusable
    for sock in (far_t, reader_t, relay_out, near):
        sock.close()


async def test_what_came_before_a_broken_frame_still_goes_on() -> None:
    near, far = unix_pair()
    relay_out, reader = unix_pair()
    far.sendall(frame(b"whole") + HEADER.pack(100) + b"cut")
    far.close()  # in the middle of the second frame
    session = LinkSession(RawSocketStream(near))
    with pytest.raises(PEER_GONE), trio.fail_after(10):
        await OneWay(session, RawSocketStream(relay_out), Spares()).copy()
    relay_out.close()
    assert await read_to_eof(trio.socket.from_stdlib_socket(reader)) == b"wholecut"
    for sock in (near, reader):
        sock.close()


async def test_bytes_that_are_no_frame_end_the_session_with_their_explanation() -> None:
    # A WSL2 half run with --insecure-no-auth, met by a Windows half that greets with its
    # handshake: those bytes must not reach the client as if they were its answer.
    near, far = unix_pair()
    relay_out, reader = unix_pair()
    far.sendall(b"TSWSL\x01" + bytes(32))
    explained: list[bytes] = []

    def explain(received: bytes) -> str:
        explained.append(received)
        return "the Windows half expects the link handshake; restart this half without it"

    session = LinkSession(RawSocketStream(near), explain_out_of_step=explain)
    with pytest.raises(LinkOutOfStep, match=r"^the Windows half expects the link handshake"):
        with trio.fail_after(10):
            await OneWay(session, RawSocketStream(relay_out), Spares()).copy()
    assert explained == [b"TSWS"]
    relay_out.close()
    assert await read_to_eof(trio.socket.from_stdlib_socket(reader)) == b""  # nothing passed on
    for sock in (near, far, reader):
        sock.close()


async def test_the_largest_frame_is_still_a_frame() -> None:
    near, far = unix_pair()
    session = LinkSession(RawSocketStream(near))
    far.sendall(HEADER.pack(MAX_FRAME) + b"x")
    assert await session.receive_some(1) == b"x"
    for sock in (near, far):
        sock.close()


async def test_portable_path_goes_through_a_session() -> None:
    """session <-> a stream without a fast path (the Windows named pipe's case)."""
    near, far = unix_pair()
    session = LinkSession(RawSocketStream(near))
    pipe_end, test_end = trio.testing.memory_stream_pair()
    far.sendall(frame(b"GET / HTTP/1.1\r\n\r\n") + frame(b""))
    with trio.fail_after(10):
        await OneWay(session, pipe_end, Spares()).copy()
        assert await test_end.receive_some() == b"GET / HTTP/1.1\r\n\r\n"
        await test_end.send_all(b"HTTP/1.1 200 OK\r\n\r\n")
        await test_end.send_eof()
        await OneWay(pipe_end, session, Spares()).copy()
    assert read_frames(far) == [b"HTTP/1.1 200 OK\r\n\r\n", b""]
    assert session.reusable
    far.close()
    near.close()


async def test_a_reset_link_ends_the_copy_as_peer_gone() -> None:
    near, far = tcp_pair()
    writer, relay_in = unix_pair()
    far.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    far.close()  # RST
    writer.sendall(b"x" * 65536)
    with pytest.raises(PEER_GONE), trio.fail_after(10):
        await OneWay(RawSocketStream(relay_in), LinkSession(RawSocketStream(near)), Spares()).copy()
    for sock in (writer, relay_in, near):
        sock.close()


# --- the Windows half's view of a link -------------------------------------------------------


async def at_once(_: trio.abc.Stream) -> None:
    """A first-byte wait that returns at once: the bytes are already there."""


async def test_a_link_without_session_mode_is_one_raw_connection() -> None:
    near, far = unix_pair()
    far.sendall(b"GET / HTTP/1.1\r\n\r\n")
    link = RawSocketStream(near)
    seen = [stream async for stream in link_sessions(link, at_once)]
    assert seen == [link]
    assert near.recv(3) == b"GET"  # nothing consumed
    near.close()
    far.close()


async def test_a_link_closed_before_any_byte_carries_nothing() -> None:
    near, far = unix_pair()
    far.close()
    assert [stream async for stream in link_sessions(RawSocketStream(near), at_once)] == []
    near.close()


async def test_a_session_mode_link_carries_sessions_until_one_ends_unclean() -> None:
    near, far = unix_pair()
    far.sendall(SESSION_MODE + frame(b"one") + frame(b""))
    served = []
    async for session in link_sessions(RawSocketStream(near), at_once):
        assert isinstance(session, LinkSession)
        served.append(await session.receive_some())
        assert await session.receive_some() == b""
        if len(served) == 1:
            await session.send_eof()  # ends cleanly: the next session may start
            assert read_frames(far) == [b""]
            far.sendall(frame(b"two") + frame(b""))
        # the second session is left with its answer unsent: the link ends
    assert served == [b"one", b"two"]
    near.close()
    far.close()


# --- both halves in-process: links are reused -----------------------------------------------


class NoHalfClose(trio.abc.Stream):
    """A stream without half-close over a socket: the Windows half's named pipe, as it
    looks to the relay (so the portable path carries it)."""

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        self._stream = stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


@dataclass
class TwoHalves:
    front: UnixEndpoint
    links: list[object] = field(default_factory=list)  # one per link the Windows side accepted
    upstream_connections: int = 0  # open now


class Upstream(Enum):
    # Answers each chunk at once, closes after the client's EOF (a socket LocalAPI).
    ECHO = "echo"
    # The same, but the relay reaches it without half-close, and it keeps the
    # connection open until the relay closes it (tailscaled over its named pipe).
    KEEP_ALIVE_PIPE = "pipe"


LINK_KEY = bytes(range(32))
FIXES = link_fixes(
    Options(), sudo=False, distro=None
)  # the commands a failed link's 502 would name


@pytest.fixture(params=[False, True], ids=["clear", "sealed"])
def sealed(request: pytest.FixtureRequest) -> bool:
    """Both kinds of link: cleartext (--insecure-no-auth) and sealed."""
    return bool(request.param)


@asynccontextmanager
async def two_halves(
    tmp_path: Path, upstream_kind: Upstream, *, sealed: bool = False
) -> AsyncIterator[TwoHalves]:
    """front socket -> WSL2-style relay -> TCP link -> Windows-style relay -> upstream."""
    up_path = tmp_path / "up.sock"
    front = tmp_path / "front.sock"
    halves = TwoHalves(UnixEndpoint(str(front)))
    scratch = new_scratch_buffers()

    async def count_link(
        stream: trio.abc.Stream, first_message_opened: Callable[[], None]
    ) -> trio.abc.AsyncResource | str:
        halves.links.append(stream)
        if not sealed:
            return stream
        assert isinstance(stream, RawSocketStream)
        return await accept_link(stream, LINK_KEY, scratch, first_message_opened)

    async def serve_upstream(stream: trio.abc.Stream) -> None:
        halves.upstream_connections += 1
        try:
            async with stream:
                while chunk := await stream.receive_some():
                    await stream.send_all(chunk)
                if upstream_kind is Upstream.ECHO:
                    assert isinstance(stream, trio.abc.HalfCloseableStream)
                    await stream.send_eof()
        except trio.BrokenResourceError:
            pass  # the relay went first
        finally:
            halves.upstream_connections -= 1

    upstream = Hop(UnixEndpoint(str(up_path)), "the upstream", "start it")
    connect_upstream = hop_connector(upstream)

    async def connect_without_half_close() -> trio.abc.Stream:
        stream = await connect_upstream()
        assert isinstance(stream, trio.abc.HalfCloseableStream)
        return NoHalfClose(stream)

    windows_listener = RawSocketListener(listening_socket(socket.AF_INET, ("127.0.0.1", 0), 64))
    port = windows_listener.socket.getsockname()[1]
    windows = Relay.for_links(
        connect_without_half_close
        if upstream_kind is Upstream.KEEP_ALIVE_PIPE
        else connect_upstream,
        admit=count_link,
        sessions=sealed_sessions if sealed else link_sessions,
    )
    windows_half = Hop(TcpEndpoint("127.0.0.1", port), "the Windows half", "start it")
    wsl: Relay
    warm: WarmLinks[SealedLink] | WarmLinks[RawSocketStream]
    if sealed:
        warm = sealed_warm = WarmLinks(
            authenticated_connector(windows_half, LINK_KEY, FIXES), size=1, max_parked=8
        )
        wsl = Relay.for_clients(
            session_connector(sealed_warm.take, sealed_warm.park, SealedSession)
        )
    else:
        warm = clear_warm = WarmLinks(
            start_session_mode(hop_connector(windows_half)), size=1, max_parked=8
        )
        wsl = Relay.for_clients(session_connector(clear_warm.take, clear_warm.park, LinkSession))
    up_listener = RawSocketListener(listening_socket(socket.AF_UNIX, str(up_path), 64))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve_upstream, [up_listener])
        await nursery.start(windows.serve, [windows_listener])
        nursery.start_soon(warm.keep_warm)
        front_listener = RawSocketListener(listening_socket(socket.AF_UNIX, str(front), 64))
        await nursery.start(wsl.serve, [front_listener])
        yield halves
        warm.close()
        nursery.cancel_scope.cancel()


async def ask(front: UnixEndpoint, payload: bytes, *, half_close: bool) -> bytes:
    """Send `payload`, read as many bytes back, close; half-close first if asked to."""
    async with await open_stream(front) as client:
        assert isinstance(client, trio.abc.HalfCloseableStream)
        await client.send_all(payload)
        if half_close:
            await client.send_eof()
        received = bytearray()
        while len(received) < len(payload):
            received += await client.receive_some()
        return bytes(received)


async def settled() -> None:
    await trio.testing.wait_all_tasks_blocked(0.05)


@pytest.mark.parametrize("half_close", [True, False], ids=["half-close", "close"])
async def test_one_link_carries_one_client_connection_after_another(
    tmp_path: Path, half_close: bool, sealed: bool
) -> None:
    async with two_halves(tmp_path, Upstream.ECHO, sealed=sealed) as halves:
        with trio.fail_after(30):
            for index in range(20):
                payload = os.urandom(index * 10_000 + 1)
                assert await ask(halves.front, payload, half_close=half_close) == payload
                await settled()
                assert halves.upstream_connections == 0
        # The pool keeps one link warm; each client's session hands it back.
        assert len(halves.links) == 2  # the warm link, and the refill the first take set off


async def test_a_client_that_exits_closes_a_pipe_that_would_stay_open(
    tmp_path: Path, sealed: bool
) -> None:
    """tailscaled keeps a pipe connection open for the next request; the `tailscale` CLI
    exits without a half-close. GONE closes the pipe, and the link carries on."""
    async with two_halves(tmp_path, Upstream.KEEP_ALIVE_PIPE, sealed=sealed) as halves:
        with trio.fail_after(30):
            for _ in range(5):
                assert await ask(halves.front, b"GET / HTTP/1.1", half_close=False) == (
                    b"GET / HTTP/1.1"
                )
                await settled()
                assert halves.upstream_connections == 0  # closed, not lingering
        assert len(halves.links) == 2  # and every session ended cleanly: links reused


async def test_a_half_closed_client_still_gets_its_answer_over_a_pipe(
    tmp_path: Path, sealed: bool
) -> None:
    async with two_halves(tmp_path, Upstream.KEEP_ALIVE_PIPE, sealed=sealed) as halves:
        with trio.fail_after(30):
            async with await open_stream(halves.front) as client:
                assert isinstance(client, trio.abc.HalfCloseableStream)
                await client.send_all(b"request")
                await client.send_eof()  # a half-close: the pipe is kept
                await settled()
                assert halves.upstream_connections == 1
                assert await client.receive_some() == b"request"


async def test_a_client_gone_mid_answer_costs_nothing_else(tmp_path: Path, sealed: bool) -> None:
    async with two_halves(tmp_path, Upstream.ECHO, sealed=sealed) as halves:
        with trio.fail_after(30):
            rude = socket.socket(socket.AF_UNIX)
            rude.connect(halves.front.path)
            rude.sendall(os.urandom(65536))  # echoed back to nobody (small: never blocks)
            rude.close()
            await settled()
            payload = os.urandom(100_000)
            assert await ask(halves.front, payload, half_close=True) == payload
            await settled()
        assert halves.upstream_connections == 0


async def test_spare_links_left_by_a_burst_are_closed_once_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    far_ends: list[socket.socket] = []
    opened: list[RawSocketStream] = []

    async def connect() -> RawSocketStream:
        await trio.lowlevel.checkpoint()
        near, far = socket.socketpair()
        far_ends.append(far)
        opened.append(RawSocketStream(near))
        return opened[-1]

    def still_open() -> int:
        return sum(link.socket.fileno() != -1 for link in opened)

    warm = WarmLinks(connect, size=2, max_parked=8)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(warm.keep_warm)
        await trio.testing.wait_all_tasks_blocked()
        taken = [await warm.take() for _ in range(6)]  # a burst: 2 parked, the rest opened
        for link in taken:
            assert isinstance(link, RawSocketStream)
            warm.park(link)
        await trio.testing.wait_all_tasks_blocked()
        after_burst = still_open()
        assert after_burst >= 6  # all given back, and what refills the burst set off
        await trio.sleep(SPARE_IDLE_SECONDS / 2)
        assert still_open() == after_burst  # not idle long enough yet
        await trio.sleep(SPARE_IDLE_SECONDS)
        assert still_open() == 2  # back to the pool's size
        warm.close()
    assert still_open() == 0  # closing the pool closes what it parked
    for far in far_ends:
        far.close()


async def test_a_steady_stream_of_sessions_does_not_wake_the_refill_task(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One client after another leaves the pool one over its size after each
    # session: the spares' timer must not be re-armed every time.
    checks = 0
    close_idle_spares = WarmLinks._close_idle_spares

    def counted(self: WarmLinks[RawSocketStream]) -> None:
        nonlocal checks
        checks += 1
        close_idle_spares(self)

    monkeypatch.setattr(WarmLinks, "_close_idle_spares", counted)
    pairs: list[tuple[socket.socket, socket.socket]] = []

    def new_link() -> RawSocketStream:
        pairs.append(socket.socketpair())
        return RawSocketStream(pairs[-1][0])

    async def connect() -> RawSocketStream:
        return new_link()

    warm = WarmLinks(connect, size=2, max_parked=8)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(warm.keep_warm)
        await trio.testing.wait_all_tasks_blocked()
        warm.park(new_link())  # one spare: the timer starts
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(100):
            link = await warm.take()
            await trio.testing.wait_all_tasks_blocked()
            assert isinstance(link, RawSocketStream)
            warm.park(link)
            await trio.testing.wait_all_tasks_blocked()
        assert checks == 0  # no time has passed: the timer has not fired, nor been re-armed
        warm.close()
    for near, far in pairs:
        near.close()
        far.close()


async def test_a_link_given_back_after_close_is_closed() -> None:
    near, far = socket.socketpair()

    async def never_called() -> RawSocketStream:
        raise AssertionError("no link should be opened")

    warm = WarmLinks(never_called, size=0, max_parked=8)
    warm.close()
    link = RawSocketStream(near)
    warm.park(link)
    assert near.fileno() == -1
    far.close()


async def test_a_wsl2_half_with_a_key_is_told_this_half_has_none() -> None:
    near, far = unix_pair()
    far.sendall(SEALED_LINK_PREFIX + bytes(48))  # a sealed link's first message
    link = RawSocketStream(near)
    assert [stream async for stream in link_sessions(link, at_once)] == []  # nothing relayed
    assert far.recv(64) == NO_AUTH_HERE
    near.close()
    far.close()


# --- inputs the tests above do not give ------------------------------------------------------


async def test_part_of_the_next_header_arriving_with_the_end_of_a_payload(
    link_pair: tuple[LinkSession[RawSocketStream], socket.socket],
) -> None:
    session, far = link_pair
    second = frame(b"second")
    far.sendall(frame(b"first") + second[:2])
    buffer = bytearray(b"\xee" * 64)  # no stale zero can pass for a header byte
    assert buffer[: session.try_receive_into(buffer)] == b"first"
    # Two bytes of the header came along; the rest is still on its way.
    with pytest.raises(BlockingIOError):
        session.try_receive_into(buffer)
    far.sendall(second[2:] + frame(b""))
    assert buffer[: session.try_receive_into(buffer)] == b"second"
    assert session.frame_length == len(b"second")
    assert session.try_receive_into(buffer) == 0
    assert session.reusable is False  # this direction has not ended yet
    await session.send_eof()
    assert session.reusable


async def test_a_whole_next_header_arriving_with_a_payload_is_taken_in_only_when_reached(
    link_pair: tuple[LinkSession[RawSocketStream], socket.socket],
) -> None:
    session, far = link_pair
    far.sendall(frame(b"ab") + HEADER.pack(0))
    buffer = bytearray(64)
    assert buffer[: session.try_receive_into(buffer)] == b"ab"
    assert session.frame_length == 2  # the end frame's header is read, not yet taken in
    assert session.try_receive_into(buffer) == 0
    assert session.frame_length == 0


def reset(sock: socket.socket) -> None:
    """Close a TCP socket with an RST: the peer's next call fails with an OS error."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_an_os_error_while_receiving_is_a_broken_session() -> None:
    near, far = tcp_pair()
    session = LinkSession(RawSocketStream(near))
    reset(far)
    with pytest.raises(trio.BrokenResourceError) as raised, trio.fail_after(10):
        await session.receive_some()
    assert isinstance(raised.value.__cause__, OSError)
    near.close()


async def test_receiving_on_a_session_whose_link_was_closed_here_is_closed_not_broken() -> None:
    near, far = tcp_pair()
    session = LinkSession(RawSocketStream(near))
    near.close()
    with pytest.raises(trio.ClosedResourceError):
        await session.receive_some()
    far.close()


async def test_an_os_error_while_sending_is_a_broken_session() -> None:
    near, far = tcp_pair()
    session = LinkSession(RawSocketStream(near))
    reset(far)

    async def send_until_refused() -> None:
        for _ in range(1000):  # the first sends may still be taken before the RST is seen
            await session.send_all(b"x" * 65536)

    with pytest.raises(trio.BrokenResourceError), trio.fail_after(10):
        await send_until_refused()
    with pytest.raises(trio.BrokenResourceError):
        await session.send_eof()
    near.close()


async def test_wait_send_all_might_not_block_waits_for_room_on_the_link() -> None:
    near, far = unix_pair()
    session = LinkSession(RawSocketStream(near))
    queued = fill(near)
    room = trio.Event()

    async def wait_for_room() -> None:
        await session.wait_send_all_might_not_block()
        room.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_room)
        await trio.testing.wait_all_tasks_blocked()
        assert not room.is_set()  # the link is full
        far.setblocking(True)
        assert far.recv(queued, socket.MSG_WAITALL) == b"\xff" * queued
        with trio.fail_after(10):
            await room.wait()
    with trio.fail_after(10):
        await session.wait_send_all_might_not_block()  # room now: no wait at all
    near.close()
    far.close()


async def test_a_session_at_once_on_a_parked_link_and_none_without_one() -> None:
    near, far = unix_pair()
    parked: list[RawSocketStream] = [RawSocketStream(near)]
    recycled: list[RawSocketStream] = []
    open_at_once = session_at_once(
        lambda: parked.pop() if parked else None, recycled.append, LinkSession
    )
    session = open_at_once()
    assert isinstance(session, LinkSession)
    assert session.link.socket is near
    assert open_at_once() is None  # nothing parked any more: no waiting for one
    far.sendall(HEADER.pack(0))
    await session.send_eof()
    assert await session.receive_some() == b""
    await session.aclose()
    assert recycled == [session.link]  # given back to the recycler it was opened with
    near.close()
    far.close()


async def test_the_windows_half_waits_for_a_links_first_byte() -> None:
    # The first-byte wait may return before the byte is readable (it is a hint): the mode
    # is then waited for, not taken as a closed link.
    near, far = unix_pair()
    served: list[bytes] = []

    async def serve() -> None:
        async for session in link_sessions(RawSocketStream(near), at_once):
            assert isinstance(session, LinkSession)
            served.append(await session.receive_some())
            assert await session.receive_some() == b""
            await session.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await trio.testing.wait_all_tasks_blocked()
        assert served == []
        far.sendall(SESSION_MODE + frame(b"late") + frame(b""))
        await trio.testing.wait_all_tasks_blocked()
        assert read_frames(far) == [b""]
        far.close()  # between sessions: the link's end
    assert served == [b"late"]
    near.close()


async def test_an_os_error_before_a_links_first_byte_is_a_broken_link() -> None:
    near, far = tcp_pair()
    reset(far)

    async def sessions() -> list[trio.abc.Stream]:
        return [session async for session in link_sessions(RawSocketStream(near), at_once)]

    with pytest.raises(trio.BrokenResourceError), trio.fail_after(10):
        await sessions()
    near.close()


async def test_a_move_that_moves_nothing_mid_frame_is_a_broken_session(
    link_pair: tuple[LinkSession[RawSocketStream], socket.socket],
) -> None:
    session, far = link_pair
    far.sendall(HEADER.pack(10) + b"abc")
    with pytest.raises(
        trio.BrokenResourceError, match=r"^the link closed in the middle of a frame$"
    ):
        session.try_move_payload(lambda fd, count: 0, 100)


async def test_sending_after_this_direction_ended_is_refused_in_words(
    link_pair: tuple[LinkSession[RawSocketStream], socket.socket],
) -> None:
    session, _ = link_pair
    await session.send_eof()
    with pytest.raises(
        trio.ClosedResourceError, match=r"^this direction of the session has ended$"
    ):
        await session.send_all(b"late")


async def test_a_frame_sent_at_once_leaves_once(
    link_pair: tuple[LinkSession[RawSocketStream], socket.socket],
) -> None:
    session, far = link_pair
    buffer = memoryview(bytearray(HEADER.size + 5))
    buffer[HEADER.size :] = b"hello"
    assert session.send_framed_now(buffer, 5) is None  # the link took it all
    await session.send_eof()
    assert read_frames(far) == [b"hello", b""]


def test_the_pump_may_splice_a_sessions_bulk_payloads(
    link_pair: tuple[LinkSession[RawSocketStream], socket.socket],
) -> None:
    session, _ = link_pair
    assert session.fast_end().bulk is session
