"""Moving bytes from one stream to another, as cheaply as the platform allows.

The relay spends its life here, so there are two ways to do it:

- Between two raw sockets on Linux, `splice` moves the bytes inside the kernel
  (`_linux_splice.py`).
- Anywhere else (a Windows named pipe or socket, a test's memory stream) the
  portable trio loop copies chunk by chunk.

Both end the same way: EOF from the source is passed on as a half-close where
the destination supports one, and a dead peer surfaces as one of the
exceptions in `PEER_GONE`.
"""

import sys

import trio

from .sockets import RawSocketStream

if sys.platform == "linux":
    from ._linux_splice import splice_one_way

__all__ = ["CHUNK_SIZE", "PEER_GONE", "copy_one_way", "splice_available"]

# Large enough for any request head; larger reads buy little on the portable path.
CHUNK_SIZE = 65536

PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


def splice_available() -> bool:
    """Whether the splice path may be used; tests turn it off to test the other."""
    return True


async def _copy_portably(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
    while chunk := await src.receive_some(CHUNK_SIZE):
        await dst.send_all(chunk)
    # A stream without half-close (a Windows named pipe) simply gets no more
    # bytes; the LocalAPI knows where a request ends from its HTTP framing.
    if isinstance(dst, trio.abc.HalfCloseableStream):
        await dst.send_eof()


async def copy_one_way(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
    """Copy until `src` ends, then pass the EOF on where `dst` can half-close."""
    if (
        sys.platform == "linux"
        and splice_available()
        and isinstance(src, RawSocketStream)
        and isinstance(dst, RawSocketStream)
    ):
        await splice_one_way(src.socket, dst.socket)
    else:
        await _copy_portably(src, dst)
