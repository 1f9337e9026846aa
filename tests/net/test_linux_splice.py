"""The Linux splice path: a link session's bulk payloads moved into a socket by `splice`."""

import errno
import os
import socket
import struct
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
import trio
import trio.testing

from tailscale_wsl2.link.sessions import GONE, HEADER, LinkSession
from tailscale_wsl2.net._linux_splice import SplicePipes
from tailscale_wsl2.net.pump import SPLICE_AT, OneWay, Spares
from tailscale_wsl2.net.sockets import PEER_GONE, RawSocketStream
from tests.support.sockets import SocketPairMaker, read_to_eof, shrink_buffers, tcp_pair, unix_pair

if sys.platform == "linux":
    pass

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="splice is Linux's")

# Small frames before, between and after bulk ones: the copy until the first
# bulk frame, the splice from there on.
FRAME_SIZES = (5, 70_000, 300_000, 1, SPLICE_AT, 200_000, 3)


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


@pytest.fixture
def spare_pipes() -> Iterator[SplicePipes]:
    """This test's pipes: nothing shared with another test, `splice` not refused yet."""
    fresh = SplicePipes(keep=4)
    yield fresh
    fresh.close()


@pytest.fixture
def splices(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The byte count of every splice made, in and out of the pipe."""
    made: list[int] = []
    real_splice = os.splice

    def counted_splice(src: int, dst: int, count: int, **kwargs: int) -> int:
        moved = real_splice(src, dst, count, **kwargs)
        made.append(moved)
        return moved

    monkeypatch.setattr(os, "splice", counted_splice)
    return made


@pytest.fixture(params=["splice", "copy"])
def path(request: pytest.FixtureRequest) -> str:
    """The two ways a session's payloads reach a socket: "copy" is every other
    platform's, and Linux's before a bulk frame."""
    return request.param  # type: ignore[no-any-return]


async def send_in_pieces(sock: trio.socket.SocketType, data: bytes, piece_size: int) -> None:
    """Send `data` in pieces that split headers and payloads anywhere."""
    for start in range(0, len(data), piece_size):
        piece = memoryview(data)[start : start + piece_size]
        while piece:
            piece = piece[await sock.send(piece) :]


class Relayed:
    """A session on a link's near end copied into `relay_out`; the test holds the
    link's far end and the destination's reader."""

    def __init__(
        self, link_pair: SocketPairMaker, destination_pair: SocketPairMaker, spares: Spares
    ) -> None:
        self.near, far = link_pair()
        self.relay_out, reader = destination_pair()
        for pair, ends in (
            (link_pair, (self.near, far)),
            (destination_pair, (self.relay_out, reader)),
        ):
            if pair is unix_pair:  # partial transfers and EAGAIN (TCP would crawl)
                shrink_buffers(*ends)
        self.far = trio.socket.from_stdlib_socket(far)
        self.reader = trio.socket.from_stdlib_socket(reader)
        self.session = LinkSession(RawSocketStream(self.near))
        self.copy = OneWay(self.session, RawSocketStream(self.relay_out), spares).copy

    def close(self) -> None:
        for sock in (self.near, self.relay_out, self.far, self.reader):
            sock.close()


@pytest.fixture
def spares(request: pytest.FixtureRequest, spare_pipes: SplicePipes) -> Spares:
    """The copy's spares: with this test's pipes, or none where it takes the copy path."""
    path = request.getfixturevalue("path") if "path" in request.fixturenames else "splice"
    return Spares(pipes=None if path == "copy" else spare_pipes)


@pytest.fixture
async def relayed(request: pytest.FixtureRequest, spares: Spares) -> AsyncIterator[Relayed]:
    link_pair, destination_pair = getattr(request, "param", (unix_pair, unix_pair))
    ends = Relayed(link_pair, destination_pair, spares)
    yield ends
    ends.close()


async def relay_frames_of_every_size(relayed: Relayed) -> None:
    """FRAME_SIZES' frames and the end, split anywhere: every byte arrives, then EOF."""
    payloads = [os.urandom(size) for size in FRAME_SIZES]
    wire = b"".join(map(frame, payloads)) + frame(b"")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relayed.copy)
            nursery.start_soon(send_in_pieces, relayed.far, wire, 7777)
            assert await read_to_eof(relayed.reader) == b"".join(payloads)


ENDS = [(link, dst) for link in (unix_pair, tcp_pair) for dst in (unix_pair, tcp_pair)]
ENDS_IDS = [f"link-{link}-to-{dst}" for link in ("unix", "tcp") for dst in ("unix", "tcp")]


@pytest.mark.parametrize("relayed", ENDS, ids=ENDS_IDS, indirect=True)
async def test_payloads_arrive_exactly_then_the_half_close(
    relayed: Relayed, path: str, splices: list[int], spare_pipes: SplicePipes
) -> None:
    await relay_frames_of_every_size(relayed)
    # A half-close: the destination can still answer through the relay's end.
    await relayed.reader.send(b"answer")
    assert relayed.relay_out.recv(16) == b"answer"
    if path == "splice":
        # Everything from the first bulk frame's rest on went through the pipe, twice.
        assert sum(splices) >= 2 * sum(FRAME_SIZES[2:])
        assert [pipe.filled for pipe in spare_pipes.spare] == [0]  # back, empty
    else:
        assert splices == []
    assert not relayed.session.reusable  # only the incoming direction has ended


async def test_gone_after_spliced_frames_ends_the_destination_entirely(
    relayed: Relayed, splices: list[int]
) -> None:
    data = os.urandom(3 * SPLICE_AT)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relayed.copy)
            nursery.start_soon(send_in_pieces, relayed.far, frame(data) + HEADER.pack(GONE), 65536)
            assert await read_to_eof(relayed.reader) == data
    assert splices
    with pytest.raises(BrokenPipeError):  # shut for reading too: nobody is left to answer
        await relayed.reader.send(b"answer")
    assert relayed.session.abandoned


async def test_a_slow_destination_gets_every_byte(relayed: Relayed, splices: list[int]) -> None:
    data = os.urandom(1024 * 1024)
    received = bytearray()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relayed.copy)
            nursery.start_soon(send_in_pieces, relayed.far, frame(data) + frame(b""), 65536)
            while chunk := await relayed.reader.recv(1000):
                received += chunk
                await trio.sleep(0)  # the pipe meets a full destination again and again
    assert bytes(received) == data
    assert splices


@pytest.mark.parametrize("pipe_size", [4096, 2**31 + 4096], ids=["one-page", "refused"])
async def test_a_small_pipe_still_moves_everything(
    relayed: Relayed,
    splices: list[int],
    spare_pipes: SplicePipes,
    pipe_size: int,
) -> None:
    """A pipe of one page fills up at each splice; a size the kernel refuses (past
    2 GiB: EINVAL; past the user's quota of pipe pages, as it may be: EPERM)
    leaves the default."""
    spare_pipes.pipe_size = pipe_size
    data = os.urandom(600_000)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relayed.copy)
            nursery.start_soon(send_in_pieces, relayed.far, frame(data) + frame(b""), 65536)
            assert await read_to_eof(relayed.reader) == data
    [pipe] = spare_pipes.spare
    assert pipe.size == min(pipe_size, 65536)  # 64 KiB: Linux's default pipe
    assert max(splices) <= pipe.size


async def test_a_quiet_stream_holds_no_pipe(relayed: Relayed, spare_pipes: SplicePipes) -> None:
    first, second = os.urandom(2 * SPLICE_AT), os.urandom(2 * SPLICE_AT)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relayed.copy)
            nursery.start_soon(send_in_pieces, relayed.far, frame(first), 65536)
            received = bytearray()
            while len(received) < len(first):
                received += await relayed.reader.recv(65536)
            await trio.testing.wait_all_tasks_blocked()
            [idle] = spare_pipes.spare  # the copy waits for the link without it
            await send_in_pieces(relayed.far, frame(second) + frame(b""), 65536)
            assert await read_to_eof(relayed.reader) == second
    assert bytes(received) == first
    assert spare_pipes.spare == [idle]  # taken again, and given back empty


@pytest.mark.parametrize(
    "relayed", [(tcp_pair, unix_pair)], ids=["link-tcp-to-unix"], indirect=True
)
async def test_a_link_closed_mid_payload_breaks_the_session_after_what_came(
    relayed: Relayed, splices: list[int]
) -> None:
    """All of it sent and the link closed before the copy starts (TCP buffers take
    it): the cut-off payload is in the pipe when the copy meets the end."""
    whole, cut = os.urandom(2 * SPLICE_AT), os.urandom(1000)
    await send_in_pieces(relayed.far, frame(whole) + HEADER.pack(SPLICE_AT) + cut, 65536)
    relayed.far.close()
    received = bytearray()

    async def receive() -> None:
        received.extend(await read_to_eof(relayed.reader))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            with pytest.raises(PEER_GONE, match="middle of a frame"):
                await relayed.copy()
            relayed.relay_out.shutdown(socket.SHUT_WR)
    assert bytes(received) == whole + cut
    assert splices


async def test_a_link_closed_between_spliced_frames_ends_the_session(
    relayed: Relayed, splices: list[int]
) -> None:
    data = os.urandom(2 * SPLICE_AT)

    async def send_then_close() -> None:
        await send_in_pieces(relayed.far, frame(data), 65536)
        relayed.far.close()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relayed.copy)
            nursery.start_soon(send_then_close)
            assert await read_to_eof(relayed.reader) == data
    assert splices
    assert not relayed.session.reusable


@pytest.mark.parametrize("relayed", [(tcp_pair, tcp_pair)], ids=["link-tcp-to-tcp"], indirect=True)
@pytest.mark.parametrize("reset", ["destination", "link"])
async def test_a_reset_mid_splice_ends_the_copy_as_peer_gone(
    relayed: Relayed, splices: list[int], spare_pipes: SplicePipes, reset: str
) -> None:
    """A peer that resets (SO_LINGER 0, as a crashed process's kernel does) while
    bytes are in flight; a pipe left holding bytes is closed, not reused."""
    gone = relayed.reader if reset == "destination" else relayed.far
    gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    data = os.urandom(8 * 1024 * 1024)

    async def send_then_reset() -> None:
        await relayed.far.send(HEADER.pack(len(data)))
        await send_in_pieces(relayed.far, data[: 2 * SPLICE_AT], 65536)
        assert await relayed.reader.recv(65536)  # the copy has begun
        gone.close()
        if reset == "destination":  # the copy finds out when it splices the rest out
            await send_in_pieces(relayed.far, data[2 * SPLICE_AT :], 65536)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_then_reset)
            with pytest.raises(PEER_GONE):
                await relayed.copy()
            nursery.cancel_scope.cancel()
    assert splices
    assert all(not pipe.filled for pipe in spare_pipes.spare)


async def test_without_a_pipe_to_be_had_the_copy_carries_on(
    relayed: Relayed,
    splices: list[int],
    spare_pipes: SplicePipes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Out of descriptors (EMFILE) when a bulk frame comes: the transfer goes on."""

    def no_descriptors_left(flags: int) -> tuple[int, int]:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(os, "pipe2", no_descriptors_left)
    await relay_frames_of_every_size(relayed)
    assert splices == []
    assert spare_pipes.spare == []


@pytest.mark.parametrize("refused", ["into-the-pipe", "out-of-the-pipe"])
@pytest.mark.parametrize("error", [errno.EINVAL, errno.EPERM], ids=["EINVAL", "EPERM"])
async def test_a_kernel_that_refuses_splice_loses_no_byte(
    relayed: Relayed, spares: Spares, monkeypatch: pytest.MonkeyPatch, refused: str, error: int
) -> None:
    """A refusal from `splice` (EINVAL from WSL1's emulation of Linux, say, or
    EPERM from a seccomp filter), into the pipe or out of it with bytes in it:
    the copy carries the rest, and later transfers copy at once."""
    real_splice = os.splice
    tried: list[int] = []

    def refusing_splice(src: int, dst: int, count: int, **kwargs: int) -> int:
        tried.append(count)
        if refused == "into-the-pipe" or dst == relayed.relay_out.fileno():
            raise OSError(error, os.strerror(error))
        return real_splice(src, dst, count, **kwargs)

    monkeypatch.setattr(os, "splice", refusing_splice)
    await relay_frames_of_every_size(relayed)
    assert tried
    assert spares.pipes is not None
    assert spares.pipes.refused  # type: ignore[attr-defined]
    tried.clear()
    again = Relayed(unix_pair, unix_pair, spares)
    try:
        await relay_frames_of_every_size(again)
    finally:
        again.close()
    assert tried == []  # not tried again
