"""Sealed links: every frame between the halves encrypted and authenticated.

The handshake (`handshake.py`) leaves both halves with the link's two cipher
states (`noise.py`), one per direction. They live as long as the link: its
sessions use them one after another, so each frame's counter is its place in
the whole link, not just in its session. A sealed frame is

    header = the plaintext's length L, 4 bytes big-endian (sent in the clear):
             1..MAX_FRAME_PLAINTEXT data, 0 the end of this direction
             (half-close), GONE the end of the whole connection
    body   = the plaintext sealed with the header as associated data:
             L + 16 bytes, and 16 for the end frames, so that an end is
             authenticated like any data

A frame that was changed, dropped, replayed, reordered or taken from another
link does not open (its counter or its key differ), nor does one whose header
was changed; a header larger than the limit is refused before its body is read
(beyond the tag's length read along with every header). Any of these raises
`LinkTampered`. A link that closes inside a session (where only an
authenticated end frame may end it) raises `LinkFailed`. Both
carry how many bytes the session had delivered: while none, the WSL2 half can
still answer its client with a 502 that names the cause.

The session rules are `LinkSession`'s, which `SealedSession` extends (end
frames, GONE, a link reused once both ends came). What differs: a payload
must be opened in this process, so nothing is spliced (`FastEnd.bulk` is
None), and `seal_into`/`open_into`, whose output may not overlap their input,
write through a scratch buffer from a pool that a session holds only while a
frame is in flight, so an idle link or session holds none.
"""

import mmap
import socket
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from functools import partial

import trio

from tailscale_wsl2.link.noise import (
    MAX_FRAME_PLAINTEXT,
    TAG_SIZE,
    NoiseFailed,
    TransportCiphers,
)
from tailscale_wsl2.link.sessions import GONE, HEADER, FirstByte, LinkSession, sessions_in_turn
from tailscale_wsl2.net.pump import FastEnd, SpareBuffers
from tailscale_wsl2.net.sockets import PeerErrorsAsBroken, RawSocketStream, send_now

__all__ = [
    "SEALED_FRAME_ROOM",
    "LinkFailed",
    "LinkTampered",
    "SealedLink",
    "SealedSession",
    "new_scratch_buffers",
    "sealed_sessions",
]

# What may be read of a frame before its header has been seen without reading past its end:
# the smallest frame, an end frame, is a header and a tag. A data frame is never the last of
# its direction, so as much is read along with its body, and an end frame that came right
# after needs no read of its own.
LOOK_AHEAD = HEADER.size + TAG_SIZE
# A scratch buffer: a sealed frame of the largest size with its header (sending), or its body
# and what is read along with it (receiving).
SEALED_FRAME_ROOM = MAX_FRAME_PLAINTEXT + TAG_SIZE + LOOK_AHEAD
# Scratch buffers kept between frames: one per direction with a frame in flight at once.
SCRATCH_KEPT = 8
# From this payload size on, frames are sealed and opened into buffers: a new bytes
# object that large is a fresh memory map of its own (the C allocator's threshold), which
# made `seal`/`open` five times slower at 256 KiB; below it they are the faster
# (bench/noise_cost.py).
INTO_BUFFERS_AT = 128 * 1024
# The advice on every failure of a link in use.
DOCTOR = "run `tailscale-wsl2 doctor`"


class LinkFailed(trio.BrokenResourceError):
    """The link broke inside a session; `delivered` is how many of the session's bytes had
    been passed on by then."""

    def __init__(self, reason: str, delivered: int) -> None:
        super().__init__(reason)
        self.delivered = delivered


class LinkTampered(LinkFailed):
    """A frame failed its check: something between the halves changed, dropped, reordered
    or replayed it, or the other end does not hold this link's keys."""


def new_scratch_buffers() -> SpareBuffers:
    """A pool of scratch buffers for one half's sealed links."""
    return SpareBuffers(keep=SCRATCH_KEPT, size=SEALED_FRAME_ROOM)


class SealedLink(trio.abc.AsyncResource):
    """A link whose handshake is done: its socket, its ciphers, where its scratch comes from."""

    def __init__(
        self, stream: RawSocketStream, ciphers: TransportCiphers, scratch: SpareBuffers
    ) -> None:
        self.stream = stream
        self.socket: socket.socket = stream.socket
        self.ciphers = ciphers
        self.scratch = scratch

    def close(self) -> None:
        self.stream.close()

    async def aclose(self) -> None:
        self.stream.close()


class SealedSession(LinkSession[SealedLink]):
    """One client connection on a sealed link: `LinkSession`'s rules, every frame sealed."""

    HEADER_ROOM = LOOK_AHEAD  # `_header` takes the next frame's first bytes, as they arrive

    def __init__(
        self, link: SealedLink, recycle: Callable[[SealedLink], None] | None = None
    ) -> None:
        super().__init__(link, recycle)
        self._seal = link.ciphers.send
        self._open = link.ciphers.receive
        self._scratch = link.scratch
        self._frame_header = b""  # the header of the frame being received, once whole
        self._frame_length = 0  # its value
        self._body: mmap.mmap | None = None  # that frame's sealed body, as it arrives
        self._body_received = 0
        self._body_size = 0
        self._left = _NOTHING_LEFT  # opened plaintext that did not fit the reader's buffer
        self.delivered = 0  # plaintext bytes of this session passed to the reader

    # --- receiving ---------------------------------------------------------------------------

    def try_receive_into(self, buffer: bytearray | memoryview | mmap.mmap) -> int:
        """Plaintext of this session into `buffer`, without waiting; 0 at its end.

        Raises BlockingIOError until a whole frame has arrived.
        """
        if self._left:
            given = self._give_left(buffer)
            self.delivered += given
            return given
        while not self._received_eof:
            if self._body is None and self._take_header():
                self._open_end()
                break
            self._receive_body()
            if opened := self._open_frame(buffer):
                return opened
        return 0

    def try_move_payload(self, move: Callable[[int, int], int], limit: int) -> int:
        raise TypeError("a sealed payload is opened in this process, never spliced")

    def _take_header(self) -> bool:
        """Read the next frame's first bytes and take in its header; BlockingIOError while
        it is incomplete. True for an end frame that came whole with its header (it is in
        `_header`), else what came of the body is in a scratch buffer (`_body`)."""
        ahead = self._header_received
        if ahead < HEADER.size:
            with memoryview(self._header) as view:
                received = self.socket.recv_into(view[ahead:])
            if not received:
                raise self._closed_inside("a frame header" if ahead else "")
            ahead = self._header_received = ahead + received
            if ahead < HEADER.size:
                raise BlockingIOError
        self._frame_header = header = bytes(self._header[: HEADER.size])
        (length,) = HEADER.unpack(header)
        if length > MAX_FRAME_PLAINTEXT and length != GONE:
            raise LinkTampered(
                f"a frame header on the link claims {length} bytes, more than any half sends: "
                f"the link was tampered with; {DOCTOR}",
                self.delivered,
            )
        self._frame_length = length
        if ahead == LOOK_AHEAD and header in _END_HEADERS:
            self._header_received = 0
            return True
        self._body_size = (0 if length == GONE else length) + TAG_SIZE
        body = self._body = self._scratch.take()
        # At most TAG_SIZE bytes came along: never more than the smallest body.
        along = self._body_received = ahead - HEADER.size
        body[:along] = self._header[HEADER.size : ahead]
        self._header_received = 0
        return False

    def _open_end(self) -> None:
        """Open the end frame that came whole with its header: this direction has ended."""
        header = self._frame_header
        try:
            self._open.open(self._header[HEADER.size :], header)
        except NoiseFailed:
            raise self._tampered() from None
        self._received_eof = True
        self.abandoned = header == _GONE_HEADER

    def _receive_body(self) -> None:
        """Read the rest of the frame's body, and after a data frame the next frame's first
        bytes if they are here; BlockingIOError until the body is whole."""
        size, received = self._body_size, self._body_received
        if received == size:  # an end frame, whole with its header
            return
        want = size - received
        if self._frame_header not in _END_HEADERS:  # never past an end: the next session's
            want += LOOK_AHEAD
        assert self._body is not None
        with memoryview(self._body) as body:
            count = self.socket.recv_into(body[received:], want)
            if not count:
                raise self._closed_inside("a frame")
            received = self._body_received = received + count
            if received < size:
                raise BlockingIOError
            if (along := received - size) > 0:
                self._header[:along] = body[size:received]
                self._header_received = along

    def _open_frame(self, buffer: bytearray | memoryview | mmap.mmap) -> int:
        """Open the frame that has arrived: its plaintext into `buffer` (the part that does
        not fit is kept for the next read), or the end it marks; the count delivered."""
        length = self._frame_length
        body, self._body = self._body, None
        assert body is not None
        try:
            with memoryview(body) as view, memoryview(buffer) as out:
                sealed = view[: self._body_size]
                if self._frame_header in _END_HEADERS:
                    self._open.open(sealed, self._frame_header)
                    self._received_eof = True
                    self.abandoned = length == GONE
                    return 0
                if INTO_BUFFERS_AT <= length <= len(out):
                    opened = self._open.open_into(sealed, self._frame_header, out)
                else:  # a small frame, or a reader with a small buffer (the portable path)
                    self._left = memoryview(self._open.open(sealed, self._frame_header))
                    opened = self._give_left(out)
        except NoiseFailed:
            raise self._tampered() from None
        finally:
            self._scratch.give_back(body)
        self.frame_length = length
        self.delivered += opened
        return opened

    def _give_left(self, buffer: bytearray | memoryview | mmap.mmap) -> int:
        left = self._left
        count = min(len(left), len(buffer))
        buffer[:count] = left[:count]
        # An empty slice would still hold the whole opened frame: a session that waits
        # (a held connection, a quiet stream) keeps none.
        self._left = left[count:] if count < len(left) else _NOTHING_LEFT
        return count

    def _tampered(self) -> LinkTampered:
        return LinkTampered(
            "a frame on the link failed its check: something between the halves changed, "
            f"dropped, reordered or replayed it; the link is closed; {DOCTOR}",
            self.delivered,
        )

    def _closed_inside(self, where: str) -> LinkFailed:
        inside = f"in the middle of {where}" if where else "in the middle of a session"
        return LinkFailed(f"the other half closed the link {inside}", self.delivered)

    async def begin(self) -> bool:
        """Wait for this session's first header bytes (the Windows half's next session);
        False when the link closed instead, between sessions."""
        with PeerErrorsAsBroken(self.socket):
            while True:
                try:
                    with memoryview(self._header) as ahead:
                        received = self.socket.recv_into(ahead[self._header_received :])
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(self.socket)
                    continue
                if not received:
                    if self._header_received:
                        raise self._closed_inside("a frame header")
                    self._received_eof = self._link_ended = True
                    return False
                self._header_received += received
                return True

    # --- sending -----------------------------------------------------------------------------

    def _seal_frame(self, payload: memoryview, out: memoryview) -> int:
        """Header and sealed `payload` into `out`; their size."""
        HEADER.pack_into(out, 0, len(payload))
        header = bytes(out[: HEADER.size])
        return HEADER.size + self._seal.seal_into(payload, header, out[HEADER.size :])

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sent_eof:
            raise trio.ClosedResourceError("this direction of the session has ended")
        with PeerErrorsAsBroken(self.socket), memoryview(data) as view:
            for start in range(0, len(view), MAX_FRAME_PLAINTEXT):
                payload = view[start : start + MAX_FRAME_PLAINTEXT]
                await self._send_frame(self._sealed_frame(payload))

    def _sealed_frame(self, payload: memoryview) -> bytes:
        header = HEADER.pack(len(payload))
        return header + self._seal.seal(payload, header)

    async def send_framed(self, buffer: memoryview, length: int) -> None:
        """Seal the `length` payload bytes at the start of `buffer` into one frame, and send it."""
        if length < INTO_BUFFERS_AT:
            await self._send_frame(self._sealed_frame(buffer[:length]))
            return
        scratch = self._scratch.take()
        try:
            with memoryview(scratch) as out:
                size = self._seal_frame(buffer[:length], out)
                await self._send_frame(out[:size])
        finally:
            self._scratch.give_back(scratch)

    def send_framed_now(
        self, buffer: memoryview, length: int
    ) -> Callable[[], Awaitable[None]] | None:
        """`send_framed` without waiting; when the link takes only part of the frame,
        what sends the rest (to be awaited before anything else is sent)."""
        if length < INTO_BUFFERS_AT:
            frame = self._sealed_frame(buffer[:length])
            sent = send_now(self.socket, frame)
            if sent == len(frame):
                return None
            self._sending = True  # until the rest has gone: the link is out of step
            return partial(self._send_frame, frame[sent:])
        scratch = self._scratch.take()
        try:
            with memoryview(scratch) as out:
                size = self._seal_frame(buffer[:length], out)
                sent = send_now(self.socket, out[:size])
                if sent == size:
                    return None
                self._sending = True  # until the rest has gone: the link is out of step
                rest = bytes(out[sent:size])
        finally:
            self._scratch.give_back(scratch)
        return partial(self._send_frame, rest)

    async def send_eof(self, *, gone: bool = False) -> None:
        """End this direction with a sealed end frame: a half-close, or with `gone` the end
        of the whole connection."""
        if not self._sent_eof:
            header = HEADER.pack(GONE if gone else 0)
            with PeerErrorsAsBroken(self.socket):
                await self._send_frame(header + self._seal.seal(b"", header))
            self._sent_eof = True

    def fast_end(self) -> FastEnd:
        """This session as the pump drives it: payloads sealed on the way out through a
        scratch buffer (no headroom needed), opened on the way in; nothing spliced."""
        return FastEnd(
            self.socket,
            self.try_receive_into,
            self.send_framed,
            self.send_framed_now,
            0,
            None,
        )

    async def aclose(self) -> None:
        if self._body is not None:  # closed with a frame half here: its buffer goes back
            self._scratch.give_back(self._body)
            self._body = None
        await super().aclose()


_GONE_HEADER = HEADER.pack(GONE)
_END_HEADERS = frozenset({HEADER.pack(0), _GONE_HEADER})
# What a session holds when all it opened has been passed on: one view for all of them.
_NOTHING_LEFT = memoryview(b"")


async def sealed_sessions(
    link: trio.abc.AsyncResource, first_byte: FirstByte
) -> AsyncGenerator[trio.abc.Stream, None]:
    """The Windows half's view of a sealed link: the client connections it carries, in turn
    (`Relay.for_links`' `sessions`, for a link its admission made a `SealedLink`)."""
    assert isinstance(link, SealedLink)
    async with aclosing(sessions_in_turn(link, link.stream, first_byte, SealedSession)) as sessions:
        async for session in sessions:
            yield session
