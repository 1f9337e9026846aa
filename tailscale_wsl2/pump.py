"""Moving bytes from one stream to another, as cheaply as the platform allows.

The relay spends its life here, so there are two ways to do it:

- Between two sockets on Linux, `os.splice` moves bytes from one socket into a
  pipe and from the pipe into the other socket inside the kernel: the bytes
  never enter the interpreter, and one Python-level loop iteration moves up to
  a whole pipe's worth. The non-blocking system call is tried first and trio
  is asked to wait only when it reports EAGAIN, which skips the two scheduler
  round trips a trio `receive_some` costs even when data is already waiting.
  The pipe is made when the first byte arrives, so an idle connection (a
  `watch-ipn-bus` stream between messages, or one of a thousand waiting
  clients) holds no pipe and no buffer.
- Anywhere else (a Windows named pipe, a test's memory stream, a platform
  without splice) the portable trio loop copies chunk by chunk.

Both end the same way: EOF from the source is passed on as a half-close where
the destination supports one, and a dead peer surfaces as one of the
exceptions in `PEER_GONE`.
"""

import errno
import fcntl
import os
import socket
import sys

import trio

from .sockets import RawSocketStream

__all__ = ["CHUNK_SIZE", "PEER_GONE", "copy_one_way", "splice_available"]

# Large enough for any request head; larger reads buy little on the portable path.
CHUNK_SIZE = 65536
# A pipe of 256 KiB lets one splice move what a busy socket buffer holds
# (Linux's default pipe is 64 KiB); its pages are only allocated as used.
PIPE_SIZE = 256 * 1024
# Yield to other tasks after this many bytes moved without waiting, so one
# bulk transfer cannot starve every other connection.
FAIRNESS_BYTES = 4 * 1024 * 1024

PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def splice_available() -> bool:
    return sys.platform == "linux" and hasattr(os, "splice")


class _Pipe:
    """A kernel pipe used as the splice buffer of one direction.

    `pending` counts the bytes in it: a pipe is reusable only when empty.
    """

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pending = 0
        try:
            fcntl.fcntl(self.write_fd, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # over the user's pipe quota: the default size still works

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


class _SparePipes:
    """Empty pipes kept for the next connection.

    Making a pipe and sizing it, then closing both ends, is four system calls
    per direction; on a new connection that is a fair share of the relay's
    own work, so pipes left empty by a finished direction are reused.
    """

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._pipes: list[_Pipe] = []

    def take(self) -> _Pipe:
        return self._pipes.pop() if self._pipes else _Pipe()

    def give_back(self, pipe: _Pipe) -> None:
        if pipe.pending == 0 and len(self._pipes) < self._keep:
            self._pipes.append(pipe)
        else:
            pipe.close()  # holds bytes of a broken transfer, or enough are kept


SPARE_PIPES = _SparePipes(keep=64)
SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


def _try_splice_into_pipe(src: socket.socket, pipe: _Pipe) -> int | None:
    """Move what `src` has into the (empty) pipe: a count, 0 at EOF, None if nothing yet."""
    try:
        pipe.pending = os.splice(src.fileno(), pipe.write_fd, PIPE_SIZE, flags=SPLICE_FLAGS)
    except BlockingIOError:
        return None
    return pipe.pending


async def _splice_into_pipe(src: socket.socket, pipe: _Pipe) -> int:
    """Like `_try_splice_into_pipe`, waiting for `src` when it has nothing yet."""
    while (moved := _try_splice_into_pipe(src, pipe)) is None:
        await trio.lowlevel.wait_readable(src)
    return moved


async def _splice_out_of_pipe(pipe: _Pipe, dst: socket.socket) -> None:
    """Move everything in the pipe into `dst`, waiting while `dst` is full."""
    while pipe.pending:
        try:
            pipe.pending -= os.splice(pipe.read_fd, dst.fileno(), pipe.pending, flags=SPLICE_FLAGS)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(dst)


async def _first_splice(src: socket.socket) -> tuple[_Pipe, int]:
    """A pipe holding the first bytes from `src` (or empty at EOF).

    The bytes are often there already (a request sent right after connect),
    so the splice is tried at once; while they are not, the pipe goes back to
    the spares: an idle connection holds no pipe.
    """
    while True:
        pipe = SPARE_PIPES.take()
        moved = _try_splice_into_pipe(src, pipe)
        if moved is not None:
            return pipe, moved
        SPARE_PIPES.give_back(pipe)
        await trio.lowlevel.wait_readable(src)


async def _splice_one_way(src: socket.socket, dst: socket.socket) -> None:
    pipe: _Pipe | None = None
    try:
        pipe, moved = await _first_splice(src)
        moved_since_yield = 0
        while moved:
            await _splice_out_of_pipe(pipe, dst)
            moved_since_yield += moved
            if moved_since_yield >= FAIRNESS_BYTES:
                moved_since_yield = 0
                await trio.lowlevel.checkpoint()
            moved = await _splice_into_pipe(src, pipe)
        dst.shutdown(socket.SHUT_WR)
    except OSError as exc:
        if exc.errno in (errno.EBADF, errno.ENOTSOCK):  # closed under us
            raise trio.ClosedResourceError from exc
        raise trio.BrokenResourceError(f"splice: {exc}") from exc
    finally:
        if pipe is not None:
            SPARE_PIPES.give_back(pipe)


async def _copy_portably(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
    while chunk := await src.receive_some(CHUNK_SIZE):
        await dst.send_all(chunk)
    # A stream without half-close (a Windows named pipe) simply gets no more
    # bytes; the LocalAPI knows where a request ends from its HTTP framing.
    if isinstance(dst, trio.abc.HalfCloseableStream):
        await dst.send_eof()


async def copy_one_way(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
    """Copy until `src` ends, then pass the EOF on where `dst` can half-close."""
    if splice_available() and isinstance(src, RawSocketStream) and isinstance(dst, RawSocketStream):
        await _splice_one_way(src.socket, dst.socket)
    else:
        await _copy_portably(src, dst)
