"""Warm links: the WSL2 half's connections to the Windows half, opened ahead of need.

Every `tailscale` command opens new connections, and each one would otherwise
wait for a TCP connect and the link handshake (one and a half round trips)
before its first byte could move. The WSL2 half therefore keeps a few links
connected and authenticated in advance; a new client takes one at once while
a background task opens its replacement.

A parked link can die while it waits (the Windows half restarted). The Windows
half never speaks first on an authenticated link, so a parked link with
anything to read (EOF, a reset, stray bytes) is dead: `take` checks with a
non-blocking peek, a single cheap system call, and drops such links. When no
live link is parked, or none can be opened (the Windows half is down), the
client's link is opened on demand exactly as without the pool, so a failure
still reaches the client as a 502 naming the cause. Refills back off while the
Windows half is unreachable, and the Windows half opens its LocalAPI
connection only when a client's first byte arrives, so parked links cost the
daemon nothing.
"""

import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic

import trio

from tailscale_wsl2.link.sessions import AnyLink, Link
from tailscale_wsl2.net.connect import UpstreamUnavailable

__all__ = ["WarmLinks"]

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0)  # seconds; the last one repeats
# Parked links beyond `size` (left by a burst) are closed once unused this long.
SPARE_IDLE_SECONDS = 5.0


def _is_dead(link: Link) -> bool:
    try:
        # Non-blocking: "would block" means nothing to read, as a live link has.
        link.socket.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:
        pass  # reset while parked
    return True


class WarmLinks(Generic[AnyLink]):
    """Keep `size` authenticated links ready; `take` one, or connect on demand."""

    def __init__(
        self, connect: Callable[[], Awaitable[AnyLink]], *, size: int = 4, max_parked: int
    ) -> None:
        """Links given back after a session (`park`) are kept up to `max_parked`, the
        rest closed as they come back."""
        self._connect = connect
        self._size = size
        self._max_parked = max_parked
        # Oldest first, each with the trio time it was parked at; taken from the end.
        self._parked: deque[tuple[AnyLink, float]] = deque()
        self._opening = 0
        self._failures = 0
        self._backing_off = False
        self._timing_spares = False  # the refill task waits for the oldest spare to idle out
        self._changed = trio.Event()
        self._running = trio.CancelScope()

    def close(self) -> None:
        """Stop refilling; `keep_warm` closes the parked links and returns."""
        self._running.cancel()

    def take_parked(self) -> AnyLink | None:
        """A live parked link, or None when there is none."""
        live = None
        while self._parked and live is None:
            # The most recently parked first: under a steady load the same few links are
            # used again, and the rest idle out.
            link, _ = self._parked.pop()
            if _is_dead(link):
                link.close()
            else:
                live = link
        if len(self._parked) + self._opening < self._size:
            self._changed.set()
        return live

    async def take(self) -> AnyLink:
        """A live parked link if there is one, else a new one (which may raise)."""
        # None parked: let the tasks that are ready run first. On a busy half a client's
        # next connection is often accepted before its last one's link came back, and that
        # link comes back in the same pass, sparing a new link its connect and handshake.
        # Two passes: trio runs a pass's tasks in random order, so in one this task may go
        # first; by the second every task that was ready has run.
        for _ in range(2):
            if (link := self.take_parked()) is not None:
                return link
            await trio.lowlevel.checkpoint()
        return self.take_parked() or await self._connect()

    def park(self, link: AnyLink) -> None:
        """Take back a link whose session ended cleanly, for the next client."""
        if self._running.cancel_called or len(self._parked) >= self._max_parked:
            link.close()
            return
        self._parked.append((link, trio.current_time()))
        if len(self._parked) > self._size and not self._timing_spares:
            self._changed.set()  # spares now: start timing them out

    async def keep_warm(self) -> None:
        """Refill the pool whenever a link is taken, until `close`."""
        with self._running:
            try:
                await self._refill_forever()
            finally:
                for link, _ in self._parked:
                    link.close()
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
                self._timing_spares = len(self._parked) > self._size
                if self._timing_spares:
                    # Until the oldest parked link has idled long enough; links parked
                    # meanwhile need no wake-up (on a busy half that is every session).
                    with trio.move_on_at(self._parked[0][1] + SPARE_IDLE_SECONDS):
                        await self._changed.wait()
                    self._close_idle_spares()
                else:
                    await self._changed.wait()

    def _close_idle_spares(self) -> None:
        """Close links beyond `size` that no client has needed for a while (after a burst)."""
        idle_since = trio.current_time() - SPARE_IDLE_SECONDS
        while len(self._parked) > self._size and self._parked[0][1] <= idle_since:
            link, _ = self._parked.popleft()
            link.close()

    async def _open_one(self) -> None:
        try:
            link = await self._connect()
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
            self._parked.append((link, trio.current_time()))
        finally:
            self._opening -= 1
            self._changed.set()
