"""Moving bytes from one stream to another, as cheaply as the platform allows.

The relay spends its life here, so each pair of ends gets the cheapest way:

- Between two raw sockets (`sockets.py`; both halves' hot path, on Linux and
  on Windows), the bytes go `recv_into` a buffer and straight out with `send`,
  and the non-blocking call is tried before trio is asked to wait. Buffers
  (256 KiB, as large as what a busy socket hands over at once) come from a
  small pool when bytes arrive and go back as soon as they are sent on, so
  an idle connection (a `watch-ipn-bus` stream between messages, or one of a
  thousand waiting clients) holds none, and a single-threaded relay that is
  never stuck on a full peer needs only one.
- Between a raw socket and any stream that offers the pump a `FastEnd` (a
  session on a link between the halves, `link/sessions.py`), the same, with
  room kept at the front of the buffer for what that end writes before the
  payload (a frame header), or what it reads off in front of the payload.
  On Linux, from such a source's first bulk frame on, its payloads are
  spliced into a raw socket instead (`_linux_splice.py`); `splice` the other
  way costs more than the copy, so a socket's bytes are always copied.
- Anything else (a Windows named pipe, a test's memory stream) goes through
  the portable trio loop, chunk by chunk.

A direction is a `OneWay`, set up once. A new connection's first bytes (its
request, already waiting when the relay gets to it) are sent on by its
`forward_ready` before the second direction's task is started
(`relay.copy_both_ways`), so that starting it is not part of every request's
latency.

Both paths end the same way (`_pass_end_on`): EOF from the source is passed
on as a half-close where the destination supports one, a source whose far
end hung up entirely ends the destination entirely, and a dead peer surfaces
as one of the exceptions in `PEER_GONE`.
"""

import mmap
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple, Protocol

import trio

from tailscale_wsl2.net.sockets import (
    COPY_CHUNK_SIZE,
    FAIRNESS_BYTES,
    PeerErrorsAsBroken,
    RawSocketStream,
    peer_closed_entirely,
    send_all_when_ready,
    send_now,
)

if sys.platform == "linux":
    from tailscale_wsl2.net._linux_splice import SplicePipes, splice_payloads

__all__ = [
    "CHUNK_SIZE",
    "SPLICE_AT",
    "BulkSource",
    "FastEnd",
    "FastStream",
    "OneWay",
    "PipePool",
    "SpareBuffers",
    "Spares",
]

# Large enough for any request head; larger reads buy little on the portable path.
CHUNK_SIZE = 65536
# A link's incoming payloads are spliced (Linux) from the first frame this
# large on: a bulk transfer. Smaller frames (requests, answers, a watch-ipn-bus
# stream) stay on the copy, which takes fewer system calls for them.
SPLICE_AT = 64 * 1024


class SpareBuffers:
    """Copy buffers between uses: only directions with bytes in flight hold one.

    A buffer is an anonymous memory map, not a bytearray: a bytearray is zeroed
    when made, so all of its 256 KiB are resident from the start, while a map's
    pages become resident only as bytes land in them. A half that has relayed
    a few requests then holds a page or two of buffer, not 256 KiB. `size` is the
    copy chunk unless a user needs room for more (a sealed frame: `link/sealed.py`).
    """

    def __init__(self, keep: int, size: int = COPY_CHUNK_SIZE) -> None:
        self._keep = keep
        self._size = size
        self._buffers: list[mmap.mmap] = []

    def take(self) -> mmap.mmap:
        return self._buffers.pop() if self._buffers else mmap.mmap(-1, self._size)

    def give_back(self, buffer: mmap.mmap) -> None:
        if len(self._buffers) < self._keep:
            self._buffers.append(buffer)


class PipePool(Protocol):
    """Splice's pipes between transfers (`_linux_splice.SplicePipes` on Linux)."""

    def close(self) -> None: ...


def _splice_pipes() -> PipePool | None:
    if sys.platform == "linux":
        return SplicePipes()
    return None


@dataclass
class Spares:
    """What copies reuse between transfers: buffers, and on Linux splice's pipes. One per
    relay, so that nothing is shared between relays (or tests) behind their back."""

    buffers: SpareBuffers = field(default_factory=lambda: SpareBuffers(keep=16))
    # None: payloads are always copied (no `splice` on this platform).
    pipes: "PipePool | None" = field(default_factory=_splice_pipes)

    def close(self) -> None:
        if self.pipes is not None:
            self.pipes.close()


# Reads what is ready into a buffer without waiting; raises BlockingIOError when
# nothing is, as a non-blocking socket does.
Receive = Callable[[mmap.mmap], int]
# Sends a buffer's first bytes on: (buffer, count of payload bytes).
Send = Callable[[memoryview, int], Awaitable[None]]
# Sends the rest of what the destination could not take at once (or raises the
# error met before).
Finish = Callable[[], Awaitable[None]]
# Sends a buffer's first bytes on without waiting: None when all went, else the Finish.
SendNow = Callable[[memoryview, int], Finish | None]


async def _receive_into_spare(
    src: socket.socket, receive: Receive, spares: SpareBuffers
) -> tuple[mmap.mmap, int]:
    """A spare buffer with the next bytes from `src` in it, and their count (0: EOF).

    While nothing has arrived the buffer goes back to the spares, so that
    waiting holds none.
    """
    while True:
        buffer = spares.take()
        try:
            return buffer, receive(buffer)
        except BlockingIOError:
            spares.give_back(buffer)
        except BaseException:
            spares.give_back(buffer)
            raise
        await trio.lowlevel.wait_readable(src)


class Tally:
    """The bytes a direction has moved, for the relay's per-connection log line."""

    moved = 0


async def _copy_chunks(
    src: socket.socket,
    receive: Receive,
    send: Send,
    bulk_from: "BulkSource | None",
    spares: SpareBuffers,
    tally: Tally,
) -> "BulkSource | None":
    """Copy until `src` ends (None), or until `bulk_from` carries a bulk
    payload: then `bulk_from`, for the rest to be spliced."""
    moved_since_yield = 0
    while True:
        buffer, received = await _receive_into_spare(src, receive, spares)
        if not received:
            spares.give_back(buffer)
            return None
        try:
            with memoryview(buffer) as view:
                # While bytes keep coming, keep the buffer and read again at once.
                while received:
                    await send(view, received)
                    tally.moved += received
                    if bulk_from is not None and bulk_from.frame_length >= SPLICE_AT:
                        return bulk_from
                    moved_since_yield += received
                    if moved_since_yield >= FAIRNESS_BYTES:
                        moved_since_yield = 0
                        await trio.lowlevel.checkpoint()
                    try:
                        received = receive(buffer)
                    except BlockingIOError:
                        break
        finally:
            spares.give_back(buffer)
        if not received:
            return None
        await trio.lowlevel.wait_readable(src)  # it would block: no use trying again first


def _socket_send(sock: socket.socket) -> Send:
    async def send(view: memoryview, length: int) -> None:
        await send_all_when_ready(sock, view[:length])

    return send


def _socket_send_now(sock: socket.socket) -> SendNow:
    def send_or_finish_later(view: memoryview, length: int) -> Finish | None:
        sent = send_now(sock, view[:length])
        if sent == length:
            return None
        return partial(send_all_when_ready, sock, bytes(view[sent:length]))

    return send_or_finish_later


class BulkSource(Protocol):
    """A source whose bulk payloads can be moved on inside the kernel (`_linux_splice.py`)."""

    frame_length: int  # the current incoming frame's payload length

    def try_move_payload(self, move: Callable[[int, int], int], limit: int) -> int: ...


class FastEnd(NamedTuple):
    """How the pump drives one end of a copy by system calls on its socket."""

    socket: socket.socket
    receive: Receive
    # Sends payload bytes laid out at `view[headroom:]`; the sender may write into the
    # headroom (a frame header) so that both leave in one call.
    send: Send
    send_now: SendNow
    headroom: int
    bulk: BulkSource | None = None


class FastStream(Protocol):
    """A stream the pump can drive directly (besides `RawSocketStream`)."""

    def fast_end(self) -> FastEnd: ...

    def hung_up(self) -> bool:
        """Whether the far end hung up entirely (not just half-closed), once this end
        has ended."""
        ...

    async def pass_end(self, hung_up: bool) -> None:
        """End this end's sending side: entirely when the source hung up, else a half-close."""
        ...


class FastPath(NamedTuple):
    """The two ends' sockets, and how to receive from one and send to the other."""

    src_socket: socket.socket
    dst_socket: socket.socket
    receive: Receive
    send: Send
    send_now: SendNow
    # A source whose bulk payloads are spliced into dst_socket (Linux).
    splice_from: BulkSource | None = None


def _raw_socket_end(stream: RawSocketStream) -> FastEnd:
    sock = stream.socket
    return FastEnd(sock, sock.recv_into, _socket_send(sock), _socket_send_now(sock), 0)


def _fast_end(stream: trio.abc.Stream) -> FastEnd | None:
    # Exact types and attribute look-ups, not isinstance: these classes derive from trio's
    # abstract ones, and isinstance against such a class goes through ABCMeta on every
    # mismatch (cProfile: 8 times per request in a half).
    if type(stream) is RawSocketStream:
        return _raw_socket_end(stream)
    fast_end: Callable[[], FastEnd] | None = getattr(stream, "fast_end", None)
    return fast_end() if fast_end is not None else None


def _after_headroom(receive: Receive, headroom: int) -> Receive:
    def receive_after_headroom(buffer: mmap.mmap) -> int:
        return receive(memoryview(buffer)[headroom:])  # type: ignore[arg-type]

    return receive_after_headroom


def _fast_path(src: FastEnd | None, dst: FastEnd | None, splicing: bool) -> FastPath | None:
    """How to copy src to dst through spare buffers, if both ends allow it."""
    if src is None or dst is None:
        return None
    receive = _after_headroom(src.receive, dst.headroom) if dst.headroom else src.receive
    # Spliced bytes reach dst's socket as they are: only into an end that adds nothing.
    splice_from = src.bulk if splicing and not dst.headroom else None
    return FastPath(src.socket, dst.socket, receive, dst.send, dst.send_now, splice_from)


def _peer_gone(fast: FastPath, exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    """An error of a fast-path copy as trio's: one of its ends closed under it, or broken."""
    if fast.src_socket.fileno() == -1 or fast.dst_socket.fileno() == -1:
        return trio.ClosedResourceError("a socket was closed under the copy")
    return trio.BrokenResourceError(f"copy: {exc}")


async def _fail(error: BaseException) -> None:
    raise error


async def _copy_portably(src: trio.abc.Stream, dst: trio.abc.Stream, tally: Tally) -> None:
    while chunk := await src.receive_some(CHUNK_SIZE):
        await dst.send_all(chunk)
        tally.moved += len(chunk)


def _hung_up(src: trio.abc.Stream) -> bool:
    """Whether the source, whose end was just read, hung up entirely; a stream the pump
    does not drive directly is taken to have half-closed."""
    if type(src) is RawSocketStream:
        return peer_closed_entirely(src.socket)
    hung_up: Callable[[], bool] | None = getattr(src, "hung_up", None)
    return hung_up is not None and hung_up()


async def _pass_end_on(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
    """Pass the end of the source on to `dst`: a half-close, or after a hang-up the end of
    both directions, so that the copy the other way ends at once instead of waiting
    on a peer that was told nothing (a named pipe, which cannot be half-closed)."""
    hung_up = _hung_up(src)
    if type(dst) is RawSocketStream:
        with PeerErrorsAsBroken(dst.socket):
            dst.socket.shutdown(socket.SHUT_RDWR if hung_up else socket.SHUT_WR)
    elif (pass_end := getattr(dst, "pass_end", None)) is not None:
        await pass_end(hung_up)
    elif hung_up:
        await dst.aclose()
    # A stream without half-close (a Windows named pipe) simply gets no more
    # bytes; the LocalAPI knows where a request ends from its HTTP framing.
    elif isinstance(dst, trio.abc.HalfCloseableStream):
        await dst.send_eof()


class OneWay(Tally):
    """One direction of a relayed connection: `src`'s bytes to `dst`, then its end.
    `moved` counts its bytes."""

    def __init__(
        self,
        src: trio.abc.Stream,
        dst: trio.abc.Stream,
        spares: Spares,
        ends: tuple[FastEnd | None, FastEnd | None] | None = None,
    ) -> None:
        """`ends` are `src`'s and `dst`'s as the pump drives them, when already described."""
        self.src = src
        self.dst = dst
        self._spares = spares
        src_end, dst_end = ends or (_fast_end(src), _fast_end(dst))
        self._fast = _fast_path(src_end, dst_end, spares.pipes is not None)
        # Kept only until `reversed` takes them, and not at all by the reversed direction
        # itself: a thousand idle connections would otherwise hold them all.
        self._ends_reversed = None if ends else (dst_end, src_end)
        self._unsent: Finish | None = None  # what forward_ready left to `copy`

    def reversed(self) -> "OneWay":
        """The other direction, its ends described once for both."""
        ends, self._ends_reversed = self._ends_reversed, None
        return OneWay(self.dst, self.src, self._spares, ends)

    def forward_ready(self) -> bool:
        """Send on what `src` has received already, without waiting; False when
        part of it, or an error met, is left for `copy`.

        It never raises, so that it can run where nothing could close the streams
        (the accepting task). An EOF is left for `copy` to find: a socket reports
        it again, and so does a session.
        """
        fast = self._fast
        if fast is None:
            return True
        buffers = self._spares.buffers
        buffer = buffers.take()
        try:
            with memoryview(buffer) as view:
                received = fast.receive(buffer)
                if received:
                    self._unsent = fast.send_now(view, received)
                    self.moved += received
        except BlockingIOError:
            pass
        except OSError as exc:
            error = _peer_gone(fast, exc)
            error.__cause__ = exc  # as `raise ... from exc` would have it, for --verbose
            self._unsent = partial(_fail, error)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:  # a session's framing
            self._unsent = partial(_fail, exc)
        finally:
            buffers.give_back(buffer)
        return self._unsent is None

    async def copy(self) -> None:
        """Copy until `src` ends, then pass its end on to `dst` (`_pass_end_on`)."""
        fast = self._fast
        if fast is None:
            await _copy_portably(self.src, self.dst, self)
        else:
            try:
                if self._unsent is not None:
                    unsent, self._unsent = self._unsent, None
                    await unsent()
                await self._copy_fast(fast)
            except OSError as exc:
                raise _peer_gone(fast, exc) from exc
        await _pass_end_on(self.src, self.dst)

    def _move_counted(self, bulk: BulkSource, move: Callable[[int, int], int], limit: int) -> int:
        moved = bulk.try_move_payload(move, limit)
        self.moved += moved
        return moved

    async def _copy_fast(self, fast: FastPath) -> None:
        buffers, pipes = self._spares.buffers, self._spares.pipes
        bulk = await _copy_chunks(
            fast.src_socket, fast.receive, fast.send, fast.splice_from, buffers, self
        )
        if bulk is None:
            return
        spliced_to_end = False
        if sys.platform == "linux":  # splice_from is set only where splicing is
            assert isinstance(pipes, SplicePipes)
            spliced_to_end = await splice_payloads(
                fast.src_socket, partial(self._move_counted, bulk), fast.dst_socket, pipes
            )
        if not spliced_to_end:  # no pipe to be had: copy the rest
            await _copy_chunks(fast.src_socket, fast.receive, fast.send, None, buffers, self)
