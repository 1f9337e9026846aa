"""Moving bytes between two sockets inside the Linux kernel with `splice`.

`os.splice` moves bytes from a socket into a pipe and from the pipe into the
other socket: they never enter the interpreter, and one Python-level loop
iteration moves up to a whole pipe's worth. The non-blocking system call is
tried first and trio is asked to wait only when it reports EAGAIN. Pipes come
from a small pool when a direction has bytes to move and go back to it when
that direction is idle or done, so an idle connection (a `watch-ipn-bus`
stream between messages, or one of a thousand waiting clients) holds none.

Linux only; `pump.py` chooses this path when both ends are raw sockets.
"""

import errno
import fcntl
import os
import socket
import sys

import trio

assert sys.platform == "linux"

__all__ = ["SPARE_PIPES", "splice_one_way"]

# A pipe of 256 KiB lets one splice move what a busy socket buffer holds
# (Linux's default pipe is 64 KiB); its pages are only allocated as used.
PIPE_SIZE = 256 * 1024
# Yield to other tasks after this many bytes moved without waiting, so one
# bulk transfer cannot starve every other connection.
FAIRNESS_BYTES = 4 * 1024 * 1024

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


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


async def splice_one_way(src: socket.socket, dst: socket.socket) -> None:
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
