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
        self._opening = 0
        self._failures = 0
        self._backing_off = False
        self._changed = trio.Event()
        self._running = trio.CancelScope()

    def close(self) -> None:
        """Stop refilling; `keep_warm` closes the parked links and returns."""
        self._running.cancel()

    async def take(self) -> trio.abc.Stream:
        """A live parked link if there is one, else a new one (which may raise)."""
        self._changed.set()
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
        # Links are opened side by side: one at a time, a burst of clients would
        # empty the pool faster than it refills, and each client after that
        # would wait for a connect and a handshake of its own.
        async with trio.open_nursery() as openers:
            while True:
                while not self._backing_off and len(self._parked) + self._opening < self._size:
                    self._opening += 1
                    openers.start_soon(self._open_one)
                self._changed = trio.Event()
                await self._changed.wait()

    async def _open_one(self) -> None:
        try:
            stream = await self._connect()
        except UpstreamUnavailable as exc:
            # The Windows half is down: stop opening until a retry delay has passed.
            delay = RETRY_DELAYS[min(self._failures, len(RETRY_DELAYS) - 1)]
            log.debug("could not warm a link (%s); retrying in %gs", exc, delay)
            self._failures += 1
            self._backing_off = True
            await trio.sleep(delay)
            self._backing_off = False
        else:
            self._failures = 0
            assert isinstance(stream, RawSocketStream)
            self._parked.append(stream)
        finally:
            self._opening -= 1
            self._changed.set()
