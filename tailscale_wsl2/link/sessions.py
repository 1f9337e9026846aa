"""Sessions: one link between the halves carries client connections one after another.

A new link costs both halves a TCP connect and accept, the handshake, and a TCP
teardown at the end; on the short connections every `tailscale` command opens,
that was most of the relay's CPU (bench/NOTEBOOK.md). So the WSL2 half keeps
its links and reuses them: each client connection becomes a *session* on a link,
and when it is over the link goes back to the pool for the next one.

A link in session mode starts with the byte `SESSION_MODE` (no HTTP request
starts with NUL), sent by the WSL2 half right after the handshake. From then on
each direction is a series of frames:

    frame = length (4 bytes, big-endian) + that many bytes of the client connection
    length 0 = this direction of the session has ended (the half-close)
    length GONE (0xFFFFFFFF) = it has ended, and the sender's end closed its
        connection entirely: the receiver ends its own end entirely too (both
        directions, not a half-close), which ends its other direction

A session is over when each half has both sent and received its end frame;
the link is then idle, and the WSL2 half's next frame begins the next session
(the Windows half never speaks first).

GONE exists for the named pipe. A client of the WSL2 half that exits closes its
Unix socket; the Windows half cannot pass a half-close on to a pipe, and
tailscaled keeps an HTTP connection open for the next request as long as its
client does. Without GONE each `tailscale` command would leave a pipe
connection, a link and two relayed connections open for good.

Anything else (an error on either side, a connection that ends mid-session, a
shutdown) closes the link, and the other half sees the session end with it.
A link that does not start with `SESSION_MODE` carries one client connection,
unframed, so that a person debugging with curl (`--insecure-no-auth`) can still
talk HTTP to the Windows half.

This module frames in the clear: it is the link of `--insecure-no-auth`. A link
made by the handshake carries `SealedSession`s (`sealed.py`), which keep these
rules and seal every frame; the functions below take the kind of session to make.

No frame is longer than `MAX_FRAME`. A longer length is no frame header but
another program's bytes: on a WSL2 half run with `--insecure-no-auth`, the
first bytes of a Windows half that expects the handshake (its answer
`handshake.KEY_EXPECTED`, or an older one's hello), or of a web server. The session then
ends with `LinkOutOfStep`, whose message (`explain_out_of_step`, given by the
half) says who the peer is and what to do, for the relay to answer its client
with, instead of passing those bytes on.

Framing costs the bulk path nothing extra: the pump reads into a buffer after
four bytes of headroom and sends header and payload with one call
(`pump.py`); reading asks for the next frame's header along with the end of
a payload, so that headers rarely cost a `recv` of their own.
"""

import logging
import mmap
import socket
import struct
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing, suppress
from functools import partial
from typing import ClassVar, Generic, Protocol, TypeVar

import trio

from tailscale_wsl2.net.connect import Connector
from tailscale_wsl2.net.pump import FastEnd
from tailscale_wsl2.net.sockets import (
    PeerErrorsAsBroken,
    RawSocketStream,
    send_all_when_ready,
    send_now,
)

__all__ = [
    "GONE",
    "HEADER",
    "MAX_FRAME",
    "NO_AUTH_HERE",
    "SEALED_LINK_PREFIX",
    "SESSION_MODE",
    "AnyLink",
    "ExplainOutOfStep",
    "FirstByte",
    "Link",
    "LinkOutOfStep",
    "LinkSession",
    "NewSession",
    "link_sessions",
    "session_at_once",
    "session_connector",
    "sessions_in_turn",
    "start_session_mode",
]

log = logging.getLogger(__name__)

SESSION_MODE = b"\x00"
# How a sealed link starts (`handshake.py`): a half run with --insecure-no-auth recognises a
# WSL2 half that holds a key, and answers NO_AUTH_HERE instead of relaying its handshake.
SEALED_LINK_PREFIX = b"TSWSL\x02"
NO_AUTH_HERE = SEALED_LINK_PREFIX + b"\x00"
HEADER = struct.Struct(">I")
GONE = 0xFFFF_FFFF
# The pump's frames are at most its buffer (256 KiB); a length far beyond that is no header.
MAX_FRAME = 16 << 20
# The largest portable chunk; the pump's frames are at most its buffer size.
RECEIVE_SIZE = 65536


class LinkOutOfStep(trio.BrokenResourceError):
    """The link carried bytes that are no frame: the peer does not relay sessions. The
    message says who it is instead, and what to do."""


# The one line for a link whose first bytes (given) are no frame header.
ExplainOutOfStep = Callable[[bytes], str]


def _not_a_frame(received: bytes) -> str:
    return f"the other half sent {received!r}, which is no frame: the link is out of step"


class Link(Protocol):
    """A connection between the halves as sessions use it: a cleartext `RawSocketStream`
    (`--insecure-no-auth`), or a sealed link (`sealed.SealedLink`)."""

    @property
    def socket(self) -> socket.socket: ...

    def close(self) -> None: ...


AnyLink = TypeVar("AnyLink", bound=Link)


class LinkSession(trio.abc.HalfCloseableStream, Generic[AnyLink]):
    """One client connection carried on a link in session mode.

    `recycle` is called with the link when the session ended cleanly on both
    sides and the session is closed; otherwise closing the session closes the
    link. With no `recycle` the link is left to its owner.
    """

    HEADER_ROOM: ClassVar[int] = HEADER.size  # what `_header` holds of an incoming frame

    def __init__(
        self,
        link: AnyLink,
        recycle: Callable[[AnyLink], None] | None = None,
        explain_out_of_step: ExplainOutOfStep = _not_a_frame,
    ) -> None:
        self.link = link
        self._explain_out_of_step = explain_out_of_step
        self.socket = link.socket
        self._recycle = recycle
        self._header = bytearray(self.HEADER_ROOM)
        self._header_received = 0
        self._unread = 0  # payload bytes of the current incoming frame not yet read
        self.frame_length = 0  # the payload length of the current (or last) incoming frame
        self._received_eof = False
        self._sent_eof = False
        self._link_ended = False
        self.abandoned = False  # GONE received: the other half's end hung up
        self._sending = False  # a frame is partly sent: cut off now, the link is out of step

    @property
    def reusable(self) -> bool:
        """Both halves ended the session cleanly: the link may carry another."""
        return self._sent_eof and self._received_eof and not self._link_ended and not self._sending

    def try_receive_into(self, buffer: bytearray | memoryview | mmap.mmap) -> int:
        """Payload bytes of this session into `buffer`, without waiting; 0 at its end.

        Raises BlockingIOError when none are ready, as a non-blocking socket does.
        """
        if not (unread := self._payload_ahead()):
            return 0
        # The next frame's header is asked for along with the rest of this
        # payload: in a bulk transfer that saves a `recv` per frame. No further:
        # bytes after an end frame may be the link's next session.
        received = self.socket.recv_into(buffer, min(unread + HEADER.size, len(buffer)))
        if not received:
            raise trio.BrokenResourceError("the link closed in the middle of a frame")
        if received > unread:
            self._header_received = received - unread
            self._header[: self._header_received] = buffer[unread:received]
            received = unread
        self._unread = unread - received
        return received

    def try_move_payload(self, move: Callable[[int, int], int], limit: int) -> int:
        """Payload bytes of this session moved on by `move(fd, count)` (the link's
        descriptor, at most `count` bytes; `_linux_splice.py`), at most `limit`;
        0 at its end. Raises BlockingIOError when none are ready."""
        if not (unread := self._payload_ahead()):
            return 0
        moved = move(self.socket.fileno(), min(unread, limit))
        if not moved:
            raise trio.BrokenResourceError("the link closed in the middle of a frame")
        self._unread = unread - moved
        return moved

    def _payload_ahead(self) -> int:
        """The current frame's payload bytes still to read, after reading the next
        header if it is due; 0 at the session's end."""
        while not self._unread:
            if self._received_eof:
                return 0
            self._receive_header()
        return self._unread

    async def begin(self) -> bool:
        """Read what has arrived of this session's first frame header (the Windows
        half waited for it); False when the link closed instead, between sessions.

        This one `recv` tells a new session from a closed link: no peek first.
        """
        with PeerErrorsAsBroken(self.socket):
            while True:
                try:
                    self._receive_header()
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(self.socket)
                else:
                    return not self._link_ended

    def _receive_header(self) -> None:
        """Read the rest of the next frame's header and take it in once whole.

        It may be whole already: read along with the payload before it, and
        taken in only now, when the reader comes to it.
        """
        if self._header_received < HEADER.size:
            with memoryview(self._header) as header:
                received = self.socket.recv_into(header[self._header_received :])
            if not received:
                if self._header_received:
                    raise trio.BrokenResourceError("the link closed in the middle of a frame")
                # The other half closed the link between frames (it shut down, or
                # gave the session up after an error on its side): the session's
                # end, and the link's.
                self._received_eof = self._link_ended = True
                return
            self._header_received += received
            if self._header_received < HEADER.size:
                return
        self._header_received = 0
        (length,) = HEADER.unpack(self._header)
        if length == GONE:
            self._received_eof = self.abandoned = True
            return
        if length > MAX_FRAME:
            raise LinkOutOfStep(self._explain_out_of_step(bytes(self._header)))
        self._unread = self.frame_length = length
        self._received_eof = not length

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        buffer = bytearray(max_bytes or RECEIVE_SIZE)
        with PeerErrorsAsBroken(self.socket):
            while True:
                try:
                    return bytes(buffer[: self.try_receive_into(buffer)])
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(self.socket)

    async def _send_frame(self, frame: bytes | bytearray | memoryview) -> None:
        self._sending = True
        await send_all_when_ready(self.socket, frame)
        self._sending = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sent_eof:
            raise trio.ClosedResourceError("this direction of the session has ended")
        if data:  # a length-0 frame would end the session
            with PeerErrorsAsBroken(self.socket):
                await self._send_frame(HEADER.pack(len(data)) + data)

    async def send_framed(self, buffer: memoryview, length: int) -> None:
        """Send the `length` payload bytes at `buffer[HEADER.size:]` as one frame.

        The pump's fast path: the header goes into the buffer's headroom, so
        header and payload leave in one call, without a copy.
        """
        HEADER.pack_into(buffer, 0, length)
        await self._send_frame(buffer[: HEADER.size + length])

    def send_framed_now(
        self, buffer: memoryview, length: int
    ) -> Callable[[], Awaitable[None]] | None:
        """`send_framed` without waiting. When the link cannot take the whole frame
        now, returns what sends the rest of it, which must be awaited before anything
        else is sent on this session."""
        HEADER.pack_into(buffer, 0, length)
        frame = buffer[: HEADER.size + length]
        sent = send_now(self.socket, frame)
        if sent == len(frame):
            return None
        self._sending = True  # until the rest has gone: the link is out of step meanwhile
        return partial(self._send_frame, bytes(frame[sent:]))

    def fast_end(self) -> FastEnd:
        """This session as the pump drives it: payloads framed in the buffer's headroom
        on the way out, read off the frames on the way in, bulk payloads spliceable."""
        return FastEnd(
            self.socket,
            self.try_receive_into,
            self.send_framed,
            self.send_framed_now,
            HEADER.size,
            self,
        )

    def hung_up(self) -> bool:
        """The other half's end hung up (GONE came), once this session's input ended."""
        return self.abandoned

    async def pass_end(self, hung_up: bool) -> None:
        """End this direction: with GONE when the source hung up, else a half-close."""
        await self.send_eof(gone=hung_up)

    async def wait_send_all_might_not_block(self) -> None:
        with PeerErrorsAsBroken(self.socket):
            await trio.lowlevel.wait_writable(self.socket)

    async def send_eof(self, *, gone: bool = False) -> None:
        """End this direction: a half-close, or with `gone` the end of the whole connection."""
        if not self._sent_eof:
            with PeerErrorsAsBroken(self.socket):
                await self._send_frame(HEADER.pack(GONE if gone else 0))
            self._sent_eof = True

    async def finish(self) -> None:
        """After the other half abandoned the session (GONE), make sure this
        direction has ended too (a copy cut short by the closing never sent its
        end), so that the link can carry the next session."""
        if self.abandoned and not self._sending:
            await self.send_eof()

    async def aclose(self) -> None:
        try:
            await self.finish()
        except trio.BrokenResourceError:
            pass  # the link is gone too: closed below
        finally:
            if not self.reusable:
                self.link.close()
            elif self._recycle is not None:
                self._recycle(self.link)


def start_session_mode(connect: Connector) -> Callable[[], Awaitable[RawSocketStream]]:
    """`connect` (a cleartext link to the Windows half), then announce session mode on it."""

    async def connect_in_session_mode() -> RawSocketStream:
        link = await connect()
        try:
            assert isinstance(link, RawSocketStream)  # links are TCP
            await link.send_all(SESSION_MODE)
        except BaseException:
            await link.aclose()
            raise
        return link

    return connect_in_session_mode


# Makes the session for a link: `LinkSession` in the clear, `SealedSession` on a sealed link.
NewSession = Callable[[AnyLink, Callable[[AnyLink], None]], LinkSession[AnyLink]]


def session_connector(
    take_link: Callable[[], Awaitable[AnyLink]],
    recycle: Callable[[AnyLink], None],
    new_session: NewSession[AnyLink],
) -> Connector:
    """The WSL2 half's upstream: a session on a link that goes back to `recycle` after it."""

    async def open_session() -> trio.abc.Stream:
        return new_session(await take_link(), recycle)

    return open_session


def session_at_once(
    take_parked: Callable[[], AnyLink | None],
    recycle: Callable[[AnyLink], None],
    new_session: NewSession[AnyLink],
) -> Callable[[], LinkSession[AnyLink] | None]:
    """The WSL2 half's upstream when a link is parked: a session on it, taken without
    waiting (`relay.UpstreamAtOnce`); None when none is."""

    def open_session_at_once() -> LinkSession[AnyLink] | None:
        link = take_parked()
        return None if link is None else new_session(link, recycle)

    return open_session_at_once


async def _peek(link: RawSocketStream, size: int = 1) -> bytes:
    """Up to `size` bytes waiting on `link` (at least one), without consuming them; b"" once
    the peer closed it."""
    with PeerErrorsAsBroken(link.socket):
        while True:
            try:
                return link.socket.recv(size, socket.MSG_PEEK)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(link.socket)


# Waits until a connection has something to read (shutdown cancels the wait).
FirstByte = Callable[[trio.abc.Stream], Awaitable[None]]


async def sessions_in_turn(
    link: AnyLink,
    stream: RawSocketStream,
    first_byte: FirstByte,
    new_session: Callable[[AnyLink], LinkSession[AnyLink]],
) -> AsyncGenerator[trio.abc.Stream, None]:
    """The Windows half's sessions on `link` (whose socket is `stream`'s), one after another,
    until one does not end cleanly or the link closes between them."""
    while True:
        await first_byte(stream)
        session = new_session(link)
        if not await session.begin():
            return
        yield session
        await session.finish()
        if not session.reusable:
            return


async def link_sessions(
    link: trio.abc.AsyncResource, first_byte: FirstByte
) -> AsyncGenerator[trio.abc.Stream, None]:
    """The Windows half's view of a cleartext link: the client connections it carries, in turn.

    `first_byte` waits until the link has something to read. A link that
    closes without a byte carries nothing, so it costs the LocalAPI no connection.
    """
    assert isinstance(link, RawSocketStream)  # the Windows half listens on TCP
    await first_byte(link)
    if not (mode := await _peek(link)):
        return
    if mode != SESSION_MODE:
        # A WSL2 half's first message comes in one piece: its prefix is all here or not sent.
        if await _peek(link, len(SEALED_LINK_PREFIX)) == SEALED_LINK_PREFIX:
            log.warning(
                "a WSL2 half with a link key connected, but this half runs with "
                "--insecure-no-auth: run both halves with the key, or both with that option"
            )
            with suppress(trio.BrokenResourceError):
                await link.send_all(NO_AUTH_HERE)
            return
        yield link
        return
    await link.receive_some(1)  # SESSION_MODE itself, already here
    async with aclosing(sessions_in_turn(link, link, first_byte, LinkSession)) as sessions:
        async for session in sessions:
            yield session
