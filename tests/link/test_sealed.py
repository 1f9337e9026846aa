"""Sealed sessions on a real socket pair: frames both ways, and every way of tampering."""

import os
import socket
import tracemalloc
from collections.abc import Callable, Iterator

import pytest
import trio

from tailscale_wsl2.link.noise import MAX_FRAME_PLAINTEXT, TAG_SIZE, CipherState, TransportCiphers
from tailscale_wsl2.link.sealed import (
    INTO_BUFFERS_AT,
    LinkFailed,
    LinkTampered,
    SealedLink,
    SealedSession,
    new_scratch_buffers,
)
from tailscale_wsl2.link.sessions import GONE, HEADER
from tailscale_wsl2.net.pump import OneWay, Spares
from tailscale_wsl2.net.sockets import RawSocketStream
from tests.support.sockets import read_to_eof, send_then_eof, unix_pair

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


def ciphers(*, wsl: bool) -> TransportCiphers:
    """Both ends' cipher states, as a handshake would have made them (fixed keys here)."""
    to_windows, to_wsl = CipherState(KEY_A), CipherState(KEY_B)
    if wsl:
        return TransportCiphers(send=to_windows, receive=to_wsl)
    return TransportCiphers(send=CipherState(KEY_B), receive=CipherState(KEY_A))


class Far:
    """The test's end of the link: a blocking socket and the Windows half's ciphers."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.ciphers = ciphers(wsl=False)

    def frame(self, payload: bytes, length: int | None = None) -> bytes:
        header = HEADER.pack(len(payload) if length is None else length)
        return header + self.ciphers.send.seal(payload, header)

    def end(self, gone: bool = False) -> bytes:
        return self.frame(b"", GONE if gone else 0)

    def read_frame(self) -> tuple[int, bytes]:
        header = self.socket.recv(HEADER.size, socket.MSG_WAITALL)
        (length,) = HEADER.unpack(header)
        size = (0 if length in (0, GONE) else length) + TAG_SIZE
        return length, self.ciphers.receive.open(self.socket.recv(size, socket.MSG_WAITALL), header)


@pytest.fixture
def link_pair() -> Iterator[tuple[SealedLink, Far]]:
    """A sealed link (the WSL2 half's end) on a socket pair; the far end is the test's."""
    near, far = unix_pair()
    link = SealedLink(RawSocketStream(near), ciphers(wsl=True), new_scratch_buffers())
    yield link, Far(far)
    near.close()
    far.close()


async def test_frames_both_ways_and_sealed_ends_make_a_reusable_session(
    link_pair: tuple[SealedLink, Far],
) -> None:
    link, far = link_pair
    session = SealedSession(link)
    await session.send_all(b"request")
    await session.send_eof()
    assert far.read_frame() == (7, b"request")
    assert far.read_frame() == (0, b"")  # the end is sealed too
    far.socket.sendall(far.frame(b"answer") + far.end())
    assert await session.receive_some() == b"answer"
    assert await session.receive_some() == b""
    assert session.reusable
    # The next session on the link goes on with the same counters.
    second = SealedSession(link)
    await second.send_all(b"again")
    assert far.read_frame() == (5, b"again")


async def test_an_end_that_came_with_the_data_is_read_along_and_nothing_past_it(
    link_pair: tuple[SealedLink, Far],
) -> None:
    link, far = link_pair
    answer, end = far.frame(b"answer"), far.end()
    following = far.frame(b"the next session")
    far.socket.sendall(answer + end + following)
    session = SealedSession(link)
    assert await session.receive_some() == b"answer"
    # The end frame came along with the answer's body: all that waits is the next session's.
    assert link.socket.recv(1024, socket.MSG_PEEK) == following
    assert await session.receive_some() == b""
    await session.send_eof()
    assert session.reusable
    assert link.socket.recv(1024) == following


async def test_nothing_is_sent_in_the_clear(link_pair: tuple[SealedLink, Far]) -> None:
    link, far = link_pair
    secret = b"tskey-auth-secret" * 100
    await SealedSession(link).send_all(secret)
    wire = far.socket.recv(1 << 16)
    assert b"tskey" not in wire
    assert len(wire) == HEADER.size + len(secret) + TAG_SIZE


async def test_gone_is_authenticated_and_answered(link_pair: tuple[SealedLink, Far]) -> None:
    link, far = link_pair
    session = SealedSession(link)
    far.socket.sendall(far.end(gone=True))
    assert await session.receive_some() == b""
    assert session.abandoned
    await session.finish()
    assert far.read_frame() == (0, b"")
    assert session.reusable


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x80]) + data[index + 1 :]


def flip_last(data: bytes) -> bytes:
    return flip(data, len(data) - 1)


@pytest.mark.parametrize(
    ("wire", "delivered"),
    [
        (lambda far: flip(far.frame(b"hello"), HEADER.size + 2), b""),  # the payload
        (lambda far: flip_last(far.frame(b"hello")), b""),  # the tag
        (lambda far: HEADER.pack(6) + far.frame(b"hello")[HEADER.size :] + b"x", b""),  # its AD
        (lambda far: far.frame(b"answer") + flip_last(far.end()), b"answer"),  # an end's tag
        # A half-close made a hang-up: the end's header is its AD too.
        (
            lambda far: far.frame(b"answer") + HEADER.pack(GONE) + far.end()[HEADER.size :],
            b"answer",
        ),
    ],
    ids=["payload", "tag", "header", "end-tag", "end-header"],
)
async def test_a_changed_frame_fails_and_delivers_nothing_of_it(
    link_pair: tuple[SealedLink, Far], wire: Callable[[Far], bytes], delivered: bytes
) -> None:
    link, far = link_pair
    session = SealedSession(link)
    far.socket.sendall(wire(far))
    if delivered:
        assert await session.receive_some() == delivered
    with pytest.raises(LinkTampered, match="failed its check") as caught:
        await session.receive_some()
    assert caught.value.delivered == len(delivered)
    assert not session.abandoned
    assert not session.reusable


async def test_an_end_that_arrives_in_pieces_is_opened_once_whole(
    link_pair: tuple[SealedLink, Far],
) -> None:
    link, far = link_pair
    session = SealedSession(link)
    end = far.end(gone=True)
    far.socket.sendall(end[: HEADER.size + 3])
    with trio.move_on_after(0.05):
        await session.receive_some()
        pytest.fail("an end frame without its whole tag ended the session")
    far.socket.sendall(end[HEADER.size + 3 :])
    assert await session.receive_some() == b""
    assert session.abandoned


async def test_a_dropped_frame_fails_the_next(link_pair: tuple[SealedLink, Far]) -> None:
    link, far = link_pair
    session = SealedSession(link)
    far.frame(b"dropped")  # sealed, never sent
    far.socket.sendall(far.frame(b"after it"))
    with pytest.raises(LinkTampered):
        await session.receive_some()


async def test_reordered_frames_fail(link_pair: tuple[SealedLink, Far]) -> None:
    link, far = link_pair
    session = SealedSession(link)
    first, second = far.frame(b"one"), far.frame(b"two")
    far.socket.sendall(second + first)
    with pytest.raises(LinkTampered):
        await session.receive_some()


async def test_a_replayed_frame_fails(link_pair: tuple[SealedLink, Far]) -> None:
    link, far = link_pair
    session = SealedSession(link)
    frame = far.frame(b"once")
    far.socket.sendall(frame + frame)
    assert await session.receive_some() == b"once"
    with pytest.raises(LinkTampered) as caught:
        await session.receive_some()
    assert caught.value.delivered == 4


async def test_a_frame_of_another_link_fails(link_pair: tuple[SealedLink, Far]) -> None:
    link, far = link_pair
    other = CipherState(bytes(32))
    header = HEADER.pack(5)
    far.socket.sendall(header + other.seal(b"hello", header))
    with pytest.raises(LinkTampered):
        await SealedSession(link).receive_some()


async def test_an_oversized_header_is_refused_before_its_body_is_read(
    link_pair: tuple[SealedLink, Far],
) -> None:
    link, far = link_pair
    body = bytes(range(64))
    far.socket.sendall(HEADER.pack(MAX_FRAME_PLAINTEXT + 1) + body)
    with pytest.raises(LinkTampered, match="more than any half sends"):
        await SealedSession(link).receive_some()
    # Only what is read along with any header (a tag's length) was taken; the rest is not read.
    assert link.socket.recv(100) == body[TAG_SIZE:]


@pytest.mark.parametrize(
    ("wire", "where"),
    [(b"\x00\x00", "a frame header"), (HEADER.pack(100) + b"x" * 50, "a frame")],
    ids=["header", "body"],
)
async def test_a_link_cut_inside_a_frame_is_broken_not_ended(
    link_pair: tuple[SealedLink, Far], wire: bytes, where: str
) -> None:
    link, far = link_pair
    far.socket.sendall(wire)
    far.socket.shutdown(socket.SHUT_WR)
    with pytest.raises(LinkFailed, match=f"in the middle of {where}") as caught:
        await SealedSession(link).receive_some()
    assert not isinstance(caught.value, LinkTampered)


async def test_a_link_cut_between_frames_is_not_an_end(link_pair: tuple[SealedLink, Far]) -> None:
    """Only a sealed end frame ends a direction: a close there could be a truncation."""
    link, far = link_pair
    session = SealedSession(link)
    far.socket.sendall(far.frame(b"part of an answer"))
    far.socket.shutdown(socket.SHUT_WR)
    assert await session.receive_some() == b"part of an answer"
    with pytest.raises(LinkFailed, match="in the middle of a session"):
        await session.receive_some()


async def test_a_session_begins_on_a_header_and_not_on_a_closed_link(
    link_pair: tuple[SealedLink, Far],
) -> None:
    link, far = link_pair
    frame = far.frame(b"hi")
    far.socket.sendall(frame[:2])
    first = SealedSession(link)
    assert await first.begin()
    far.socket.sendall(frame[2:] + far.end())
    assert await first.receive_some() == b"hi"
    assert await first.receive_some() == b""
    far.socket.shutdown(socket.SHUT_WR)
    assert not await SealedSession(link).begin()


async def test_a_small_reader_gets_a_big_frame_in_pieces(
    link_pair: tuple[SealedLink, Far],
) -> None:
    link, far = link_pair
    payload = os.urandom(200_000)
    far.socket.sendall(far.frame(payload) + far.end())
    session = SealedSession(link)
    received = bytearray()
    while chunk := await session.receive_some(4096):
        assert len(chunk) <= 4096
        received += chunk
    assert received == payload
    assert session.delivered == len(payload)


@pytest.mark.parametrize("size", [1, INTO_BUFFERS_AT - 1, INTO_BUFFERS_AT, MAX_FRAME_PLAINTEXT])
async def test_the_fast_path_seals_a_socket_into_a_session(
    link_pair: tuple[SealedLink, Far], size: int
) -> None:
    link, far = link_pair
    writer, relay_in = unix_pair()
    data = os.urandom(3 * size + 5)
    session = SealedSession(link)
    received = bytearray()

    def read_frames() -> None:
        while True:
            length, payload = far.read_frame()
            if not length:
                return
            assert length <= MAX_FRAME_PLAINTEXT
            received.extend(payload)

    writer_t = trio.socket.from_stdlib_socket(writer)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(OneWay(RawSocketStream(relay_in), session, Spares()).copy)
            nursery.start_soon(send_then_eof, writer_t, data)
            await trio.to_thread.run_sync(read_frames)
    assert received == data
    relay_in.close()
    writer_t.close()


async def test_the_fast_path_opens_a_session_into_a_socket(
    link_pair: tuple[SealedLink, Far],
) -> None:
    link, far = link_pair
    relay_out, reader = unix_pair()
    chunks = [os.urandom(size) for size in (1, 70_000, 5, MAX_FRAME_PLAINTEXT, 65536)]
    session = SealedSession(link)
    assert session.fast_end().bulk is None  # sealed payloads are opened here, never spliced

    def send_frames() -> None:
        for chunk in chunks:
            far.socket.sendall(far.frame(chunk))
        far.socket.sendall(far.end())

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(OneWay(session, RawSocketStream(relay_out), Spares()).copy)
            nursery.start_soon(trio.to_thread.run_sync, send_frames)
            assert await read_to_eof(trio.socket.from_stdlib_socket(reader)) == b"".join(chunks)
    relay_out.close()
    reader.close()


async def test_an_idle_session_holds_no_scratch_buffer(link_pair: tuple[SealedLink, Far]) -> None:
    link, far = link_pair
    session = SealedSession(link)
    frame = far.frame(b"x" * 1000)
    far.socket.sendall(frame[:500])  # half a frame: a buffer is in use
    with pytest.raises(BlockingIOError):
        session.try_receive_into(bytearray(2000))
    assert session._body is not None
    far.socket.sendall(frame[500:])
    assert session.try_receive_into(bytearray(2000)) == 1000
    assert session._body is None  # given back with the frame


async def test_a_session_that_passed_a_frame_on_keeps_none_of_it(
    link_pair: tuple[SealedLink, Far],
) -> None:
    # A held connection or a quiet stream waits with its session: the last frame it opened
    # must not stay alive with it (an empty view of it would).
    link, far = link_pair
    session = SealedSession(link)
    payload = os.urandom(INTO_BUFFERS_AT - 1)  # opened into a new object, then passed on
    far.socket.sendall(far.frame(payload))
    received = bytearray(len(payload))
    tracemalloc.start()
    try:
        assert session.try_receive_into(received) == len(payload)
        made_while_opening = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(inclusive=True, filename_pattern="*/link/*")]
        )
    finally:
        tracemalloc.stop()
    assert received == payload
    still_alive = sum(stat.size for stat in made_while_opening.statistics("filename"))
    assert still_alive < 4096, still_alive
