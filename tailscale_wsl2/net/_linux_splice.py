"""Linux: the bulk payload of a link session moved into a socket by `splice`.

`splice` moves what a socket received into a pipe and from the pipe into
another socket without the bytes entering the interpreter. From a TCP socket
(the link) into a Unix socket (a client, or the LocalAPI) the kernel passes
the received pages on by reference, which costs a fraction of the copy's
system CPU; the other way, Unix socket to TCP, `splice` cost more than the
copy (both measured with `bench/splice_or_copy.py`; the figures are in
bench/NOTEBOOK.md), so only the link's incoming payloads take this path:
`pump.py` switches a direction to it at its first frame of `SPLICE_AT` bytes
or more, and until then the copy carries the small ones.

The session keeps the framing (`LinkSession.try_move_payload`): headers are
read with `recv`, and only payload bytes go through the pipe.

Where `splice` cannot be had, the copy carries the rest and no byte is lost:
no descriptor left for a pipe, or a kernel that refuses `splice` on these
sockets (WSL1 emulates Linux and does not implement all of it). A refusal
is remembered, so later transfers go straight to the copy.
"""

import errno
import fcntl
import os
import socket
import sys
from collections.abc import Callable

import trio

from tailscale_wsl2.net.sockets import FAIRNESS_BYTES, send_all_when_ready

assert sys.platform == "linux"

__all__ = ["PIPE_SIZE", "SplicePipes", "splice_payloads"]

# As large as an unprivileged process may make a pipe (/proc/sys/fs/pipe-max-size's
# default): one splice out then moves several frames' payloads. A pipe's pages
# are the received pages themselves, referenced, not memory of its own.
PIPE_SIZE = 1024 * 1024
# Empty the pipe into the destination once less room than this is left: about
# one frame's payload (the other half's copy buffer).
REFILL_ROOM = 256 * 1024
# The pipe's side of each call must not block either (the sockets are non-blocking).
FLAGS = os.SPLICE_F_NONBLOCK
# What `splice` fails with where it does not work for these descriptors at all
# (EPERM: a seccomp filter that forbids it, as some container runtimes have).
# Were one of them the peer's doing, the copy meets it again and reports it.
REFUSALS = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM})

# Moves at most `count` bytes from the socket `fd` into the pipe, without waiting.
IntoPipe = Callable[[int, int], int]
# A session's payload into the pipe by an IntoPipe, at most the int given: the
# count moved, 0 at the session's end; BlockingIOError while nothing is ready.
PayloadSource = Callable[[IntoPipe, int], int]


class _Pipe:
    """A kernel pipe between the link and the destination; `filled` bytes are in it."""

    def __init__(self, size: int) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self.size: int = fcntl.fcntl(self.write_fd, fcntl.F_SETPIPE_SZ, size)
        except OSError:  # past the user's quota of pipe pages: the default size still works
            self.size = fcntl.fcntl(self.write_fd, fcntl.F_GETPIPE_SZ)
        self.filled = 0

    def into(self, fd: int, count: int) -> int:
        return _splice(fd, self.write_fd, count)

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


class _SpliceRefused(Exception):
    """`splice` does not work here (REFUSALS): no byte was moved by the call."""


def _splice(src: int, dst: int, count: int) -> int:
    try:
        return os.splice(src, dst, count, flags=FLAGS)
    except OSError as exc:
        if exc.errno in REFUSALS:
            raise _SpliceRefused from exc
        raise


class SplicePipes:
    """Empty pipes between bulk transfers (making one and sizing it is three system calls,
    closing it two), and whether the kernel has refused `splice` here: then later transfers
    copy at once. One per relay."""

    def __init__(self, *, keep: int = 4, pipe_size: int = PIPE_SIZE) -> None:
        self._keep = keep
        self.pipe_size = pipe_size
        self.spare: list[_Pipe] = []
        self.refused = False

    def take(self) -> _Pipe:
        return self.spare.pop() if self.spare else _Pipe(self.pipe_size)

    def give_back(self, pipe: _Pipe) -> None:
        if not pipe.filled and len(self.spare) < self._keep:
            self.spare.append(pipe)
        else:
            pipe.close()  # holds bytes of a broken transfer, or enough are kept

    def close(self) -> None:
        while self.spare:
            self.spare.pop().close()


async def _empty_into(pipe: _Pipe, dst: socket.socket) -> None:
    while pipe.filled:
        try:
            pipe.filled -= _splice(pipe.read_fd, dst.fileno(), pipe.filled)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(dst)


async def _copy_out_of(pipe: _Pipe, dst: socket.socket) -> None:
    """Send what is in the pipe on through Python, after a refusal."""
    while pipe.filled:
        data = os.read(pipe.read_fd, pipe.filled)
        pipe.filled -= len(data)
        await send_all_when_ready(dst, data)


async def splice_payloads(
    src: socket.socket, payload: PayloadSource, dst: socket.socket, pipes: SplicePipes
) -> bool:
    """Move `payload` from `src` into `dst` through a pipe until the session's end
    (True), or until `splice` cannot be had (False): no descriptor for a pipe,
    or refused by the kernel. Then no byte is left in a pipe, and the copy
    carries on.

    OS errors propagate, as the copy's do (`pump.py` makes them trio's).
    """
    while not pipes.refused:
        try:
            pipe = pipes.take()
        except OSError:
            return False
        try:
            if not await _splice_while_ready(pipe, payload, dst):
                return True
        except _SpliceRefused:
            pipes.refused = True
            await _copy_out_of(pipe, dst)
            return False
        finally:
            pipes.give_back(pipe)
        await trio.lowlevel.wait_readable(src)
    return False


async def _splice_while_ready(pipe: _Pipe, payload: PayloadSource, dst: socket.socket) -> bool:
    """Move payload into `dst` while some is ready: True once none is, False at
    the session's end.

    Bytes wait in the pipe only while more are ready at once: the pipe is
    emptied whenever the link has nothing, and when it is nearly full. It goes
    back to the spares before any wait for the link, so that a quiet stream
    holds none.
    """
    moved_since_yield = 0
    while True:
        try:
            moved = payload(pipe.into, pipe.size - pipe.filled)
        except BlockingIOError:
            if not pipe.filled:
                return True
            # This may be the pipe out of slots (each holds one page, however
            # little of it is filled) rather than the link out of bytes:
            # empty it, then try again before waiting.
            await _empty_into(pipe, dst)
            continue
        except (OSError, trio.BrokenResourceError):
            # The link broke: what came before it still goes on, as on the copy.
            await _empty_into(pipe, dst)
            raise
        if not moved:
            await _empty_into(pipe, dst)
            return False
        pipe.filled += moved
        if pipe.size - pipe.filled < REFILL_ROOM:
            await _empty_into(pipe, dst)
        moved_since_yield += moved
        if moved_since_yield >= FAIRNESS_BYTES:
            moved_since_yield = 0
            await trio.lowlevel.checkpoint()
