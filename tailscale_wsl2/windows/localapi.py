"""The Windows half's upstream by default: whichever LocalAPI the installed Tailscale serves.

Tailscale for Windows serves its LocalAPI on a named pipe since 1.34 and on TCP
127.0.0.1:41112 up to 1.32 (platform facts). Users upgrade Tailscale, and Tailscale restarts,
while the Windows half keeps running, so the choice is made per connection rather than once at
start: the pipe is tried first, and only when it does not exist is the TCP port tried. Both
attempts are cheap when they fail (a missing pipe fails inside `CreateFileW` at once; a closed
loopback port is refused at once), and when the pipe exists its connection is the one relayed,
so the common case costs nothing extra.

The choice is logged at start (`probe`) and again, once, whenever it changes. When neither
answers, the client gets the relay's HTTP 502 with one line that names both places and the fix;
the relay logs that failure (once per change, with a count), so here it is logged only by the
probe at start, where no relay connection would.
`open_stream` is a seam: Linux tests pass a fake that plays pipe and port present or absent.
"""

import errno
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from tailscale_wsl2.facts import LEGACY_LOCALAPI_HOST, LEGACY_LOCALAPI_PORT, LOCALAPI_PIPE_NAME
from tailscale_wsl2.net.connect import (
    DEFAULT_CONNECT_TIMEOUT,
    UpstreamUnavailable,
    describe_connect_error,
    open_stream,
)
from tailscale_wsl2.net.endpoints import Endpoint, NamedPipeEndpoint, TcpEndpoint

__all__ = ["LEGACY_LOCALAPI", "LOCALAPI_PIPE", "AutoLocalApi", "LocalApiAuto"]

log = logging.getLogger(__name__)

LOCALAPI_PIPE = NamedPipeEndpoint(LOCALAPI_PIPE_NAME)
LEGACY_LOCALAPI = TcpEndpoint(LEGACY_LOCALAPI_HOST, LEGACY_LOCALAPI_PORT)

FIX = "start Tailscale, then run `tailscale-wsl2 doctor`"

# Before the first connection nothing has been chosen, not even "nothing".
_NOT_YET = object()

OpenStream = Callable[[Endpoint], Awaitable[trio.abc.Stream]]


async def _open_here(endpoint: Endpoint) -> trio.abc.Stream:
    """`open_stream`, with "no such pipe" for pipes off Windows (`--side windows` on Linux)."""
    if isinstance(endpoint, NamedPipeEndpoint) and sys.platform != "win32":
        raise FileNotFoundError(errno.ENOENT, "named pipes exist only on Windows", endpoint.name)
    return await open_stream(endpoint)


@dataclass(frozen=True)
class LocalApiAuto:
    """Relay to `pipe` when it exists, else to `tcp` (`--upstream auto`)."""

    pipe: NamedPipeEndpoint = LOCALAPI_PIPE
    tcp: TcpEndpoint = LEGACY_LOCALAPI

    def __str__(self) -> str:
        return f"{self.pipe} when it exists, else {self.tcp}"


def _describe(endpoint: Endpoint) -> str:
    kind = "named pipe" if isinstance(endpoint, NamedPipeEndpoint) else "TCP"
    return f"Tailscale's LocalAPI on {kind} {endpoint}"


class AutoLocalApi:
    """A relay `Connector` for `LocalApiAuto`: the pipe, else the legacy port, per connection."""

    def __init__(
        self,
        auto: LocalApiAuto,
        *,
        open_stream: OpenStream = _open_here,
        timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self._auto = auto
        self._open_stream = open_stream
        self._timeout = timeout
        # What the last connection reached: an endpoint, None for nothing, or _NOT_YET.
        self._last_choice: object = _NOT_YET

    async def __call__(self) -> trio.abc.Stream:
        try:
            stream, endpoint = await self._connect()
        except UpstreamUnavailable as exc:
            # The relay that called logs it (relay.core.RepeatedFailures).
            self._note_choice(None, str(exc), level=logging.DEBUG)
            raise
        self._note_choice(endpoint, f"relaying to {_describe(endpoint)}")
        return stream

    async def probe(self) -> None:
        """Connect once and close, so the log says at start which LocalAPI is in use."""
        try:
            stream = await self()
        except UpstreamUnavailable as exc:
            log.warning("%s", exc)  # at start no relay connection says it
            return
        await stream.aclose()

    def _note_choice(
        self, choice: Endpoint | None, message: str, level: int = logging.INFO
    ) -> None:
        if choice == self._last_choice:
            return
        self._last_choice = choice
        log.log(level, "%s", message)

    async def _open(self, endpoint: Endpoint) -> trio.abc.Stream:
        with trio.fail_after(self._timeout):
            return await self._open_stream(endpoint)

    async def _connect(self) -> tuple[trio.abc.Stream, Endpoint]:
        pipe, tcp = self._auto.pipe, self._auto.tcp
        try:
            return await self._open(pipe), pipe
        except FileNotFoundError:
            pass  # no pipe: Tailscale is older than 1.34, or not running
        except (OSError, trio.TooSlowError) as exc:
            # The pipe exists, so this Tailscale does not serve the port: say why the pipe failed.
            raise UpstreamUnavailable(
                f"{_describe(pipe)} is not usable ({_reason(exc)}); {FIX}"
            ) from None
        try:
            return await self._open(tcp), tcp
        except ConnectionRefusedError:
            nothing_on_tcp = f"nothing on {tcp}"
        except (OSError, trio.TooSlowError) as exc:
            nothing_on_tcp = f"{tcp}: {_reason(exc)}"
        raise UpstreamUnavailable(
            f"Tailscale is not running on Windows (no LocalAPI pipe {pipe}, {nothing_on_tcp}); "
            f"{FIX}"
        )


def _reason(exc: OSError | trio.TooSlowError) -> str:
    return describe_connect_error(TimeoutError() if isinstance(exc, trio.TooSlowError) else exc)
