"""Following the vEthernet (WSL) adapter: wait for it, bind to it, rebind when it moves.

WSL creates the adapter when it first starts after boot and re-creates it on every start,
sometimes on a new subnet (platform facts). So the Windows half cannot bind once: `up` may
start before WSL, and a `wsl --shutdown` followed by a new WSL shell may move the address.

Strategy: poll the adapter list (a few milliseconds through psutil: `_windows_adapters.py`)
every `POLL_INTERVAL` seconds and compare with what is bound:

- no adapter: close the listener (its address is gone) and say once what we wait for;
- an adapter at a new address or subnet: open a listener there and swap it in.

The relay never sees the swap: it serves one `RebindingListener`, whose `accept` waits on
whichever socket is current and moves to the new one when it changes. Connections already
accepted live in the relay's own nursery, so rebinding drops none of them (relay.py unchanged).
A bind that fails (the port taken by another program) is logged once and retried each poll.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

import trio

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.windows.ipconfig import AdapterAddress, WslAdapter, find_wsl_adapter

__all__ = ["POLL_INTERVAL", "WAITING", "ListAdapters", "RebindingListener", "follow_wsl_adapter"]

log = logging.getLogger(__name__)

# Rebinding within a few seconds of a WSL restart is what users notice; polling costs a few
# milliseconds of CPU per call.
POLL_INTERVAL = 2.0

ListAdapters = Callable[[], list[AdapterAddress]]
Listener = trio.abc.Listener[trio.abc.Stream]

WAITING = (
    "waiting for the vEthernet (WSL) adapter: WSL has not started since Windows booted "
    "(open a WSL shell, or run `wsl true`)"
)


class RebindingListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose underlying listener can be replaced (or removed) while it serves.

    `accept` waits for a current listener and accepts on it; `replace` cancels an accept in
    progress, which then starts over on the new listener. A connection already accepted is
    returned as usual (an accept that has a socket does not wait again, so cannot be
    cancelled). One task accepts at a time, as in the relay.
    """

    def __init__(self) -> None:
        self._current: Listener | None = None
        self._changed = trio.Event()
        self._accepting: trio.CancelScope | None = None
        self._closed = False

    async def replace(self, new: Listener | None) -> None:
        """Accept on `new` from now on (None: accept nothing until the next replace)."""
        old, self._current = self._current, new
        if self._accepting is not None:
            self._accepting.cancel()
        self._changed.set()
        self._changed = trio.Event()
        if old is not None:
            await old.aclose()

    async def accept(self) -> trio.abc.Stream:
        while not self._closed:
            listener = self._current
            if listener is None:
                await self._changed.wait()
                continue
            self._accepting = trio.CancelScope()
            with self._accepting:
                try:
                    return await listener.accept()
                except trio.ClosedResourceError:
                    if listener is self._current:
                        raise
                    # `replace` closed it under us: go on with the new one.
                finally:
                    self._accepting = None
        raise trio.ClosedResourceError("the listener was closed")

    async def aclose(self) -> None:
        self._closed = True
        await self.replace(None)


def _describe(adapter: WslAdapter) -> str:
    return f"{adapter.found.address} on {adapter.network}"


async def follow_wsl_adapter(
    list_adapters: ListAdapters,
    bind: Callable[[WslAdapter], Awaitable[None]],
    unbind: Callable[[], Awaitable[None]],
    *,
    interval: float = POLL_INTERVAL,
    waiting: str = WAITING,
) -> NoReturn:
    """Keep `bind` applied to the WSL adapter as it comes, goes and moves; never returns.

    `bind(adapter)` starts listening on `adapter` (raising ActionableError when it cannot);
    `unbind()` stops listening once the adapter is gone; `waiting` is logged, once, while there
    is none.
    """
    bound: WslAdapter | None = None
    said_waiting = False  # the log says each thing once, not every poll
    said_cannot_bind: WslAdapter | None = None
    while True:
        adapter = find_wsl_adapter(list_adapters(), found_in="the adapter list")
        if adapter is None:
            if bound is not None:
                await unbind()
                log.warning("the vEthernet (WSL) adapter is gone (%s)", _describe(bound))
                bound = None
            if not said_waiting:
                log.info("%s", waiting)
                said_waiting = True
        elif adapter != bound:
            try:
                await bind(adapter)
            except ActionableError as exc:
                if said_cannot_bind != adapter:
                    log.warning("cannot listen on the WSL adapter (retrying): %s", exc)
                    said_cannot_bind = adapter
            else:
                if bound is not None:
                    log.info(
                        "the WSL adapter moved: %s -> %s", _describe(bound), _describe(adapter)
                    )
                bound, said_waiting, said_cannot_bind = adapter, False, None
        await trio.sleep(interval)
