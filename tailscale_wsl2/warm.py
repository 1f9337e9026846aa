"""Warm links: the WSL2 half's connections to the Windows half, opened ahead of need.

Every `tailscale` command opens new connections, and each one would otherwise
wait for a TCP connect and the link handshake (one and a half round trips)
before its first byte could move. The WSL2 half therefore keeps a few links
connected and authenticated in advance; a new client takes one at once while
a background task opens its replacement.

A parked link can die while it waits (the Windows half restarted). The Windows
half never speaks first on an authenticated link, so a parked link with
anything to read (EOF, a reset, stray bytes) is dead: `take` checks with a
zero-timeout poll, a single cheap system call, and drops such links. When no
live link is parked, or none can be opened (the Windows half is down), the
client's link is opened on demand exactly as without the pool, so a failure
still reaches the client as a 502 naming the cause. Refills back off while the
Windows half is unreachable, and the Windows half opens its LocalAPI
connection only when a client's first byte arrives, so parked links cost the
daemon nothing.
"""

import logging
import select
import sys
from collections import deque

import trio

from .sockets import RawSocketStream
from .upstream import Connector, UpstreamUnavailable

__all__ = ["WarmLinks"]

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0)  # seconds; the last one repeats


def _is_dead(stream: RawSocketStream) -> bool:
    if sys.platform == "win32":  # no poll(); select() there takes any socket
        readable, _, _ = select.select([stream.socket], [], [], 0)
        return bool(readable)
    # poll(), not select(): select() fails on descriptors numbered past 1023.
    poller = select.poll()
    poller.register(stream.socket, select.POLLIN)
    return bool(poller.poll(0))


class WarmLinks:
    """Keep `size` authenticated links ready; `take` one, or connect on demand."""

    def __init__(self, connect: Connector, *, size: int = 4) -> None:
        self._connect = connect
        self._size = size
        self._parked: deque[RawSocketStream] = deque()
        self._taken = trio.Event()
        self._running = trio.CancelScope()

    def close(self) -> None:
        """Stop refilling; `keep_warm` closes the parked links and returns."""
        self._running.cancel()

    async def take(self) -> trio.abc.Stream:
        """A live parked link if there is one, else a new one (which may raise)."""
        self._taken.set()
        while self._parked:
            stream = self._parked.popleft()
            if not _is_dead(stream):
                return stream
            stream.close()
        return await self._connect()

    async def keep_warm(self) -> None:
        """Refill the pool whenever a link is taken, until `close`."""
        with self._running:
            try:
                await self._refill_forever()
            finally:
                for stream in self._parked:
                    stream.close()
                self._parked.clear()

    async def _refill_forever(self) -> None:
        failures = 0
        while True:
            while len(self._parked) >= self._size:
                self._taken = trio.Event()
                await self._taken.wait()
            try:
                stream = await self._connect()
            except UpstreamUnavailable as exc:
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                log.debug("could not warm a link (%s); retrying in %gs", exc, delay)
                failures += 1
                await trio.sleep(delay)
                continue
            failures = 0
            assert isinstance(stream, RawSocketStream)
            self._parked.append(stream)
