"""Opening the next hop, and saying clearly why it could not be opened.

Both halves connect to a *hop*: the WSL2 half to the Windows half, the Windows
half to Tailscale's LocalAPI. When a hop cannot be reached the client must hear
which hop failed and what to do about it, so connect failures are turned here,
in one place, into `UpstreamUnavailable` whose message is exactly the line the
relay sends back to the client (see `bad_gateway.py`).
"""

import errno
import ipaddress
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from tailscale_wsl2.net.endpoints import Endpoint, NamedPipeEndpoint, TcpEndpoint, UnixEndpoint
from tailscale_wsl2.net.sockets import connect_socket

__all__ = [
    "Connector",
    "Hop",
    "UpstreamUnavailable",
    "describe_timeout",
    "hop_connector",
    "open_stream",
]

# A firewall that drops SYNs makes a TCP connect hang for minutes; the CLI user
# deserves an answer long before that.
DEFAULT_CONNECT_TIMEOUT = 5.0


class UpstreamUnavailable(Exception):
    """The next hop could not be reached; the message says which and what to do."""


Connector = Callable[[], Awaitable[trio.abc.Stream]]


@dataclass(frozen=True)
class Hop:
    """The next hop: where it is, what to call it, and the fix when it is absent."""

    endpoint: Endpoint
    name: str
    fix: str


async def open_stream(
    endpoint: Endpoint, *, timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> trio.abc.Stream:
    """Connect to `endpoint`; raise OSError as the operating system reports it, or
    trio.TooSlowError when the connect has waited `timeout` seconds."""
    if isinstance(endpoint, NamedPipeEndpoint):
        from tailscale_wsl2.net._windows_pipe import open_named_pipe  # noqa: PLC0415 (Windows only)

        with trio.fail_after(timeout):
            return await open_named_pipe(endpoint.name)
    if isinstance(endpoint, UnixEndpoint):
        if sys.platform == "win32":  # CPython has no AF_UNIX on Windows
            raise OSError(errno.EAFNOSUPPORT, "Unix sockets are not available on Windows")
        return await connect_socket(socket.AF_UNIX, endpoint.path, timeout=timeout)
    family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
    return await connect_socket(family, (endpoint.host, endpoint.port), timeout=timeout)


def describe_connect_error(exc: OSError) -> str:
    """A few words for why a connect failed, as a user would want to read them."""
    if isinstance(exc, TimeoutError):
        return "no answer in time: is a firewall dropping the connection?"
    if isinstance(exc, FileNotFoundError):
        return "no such socket or pipe"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "no route to host"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return exc.strerror or str(exc)


def _on_loopback(endpoint: Endpoint) -> bool:
    return isinstance(endpoint, TcpEndpoint) and ipaddress.ip_address(endpoint.host).is_loopback


def describe_timeout(endpoint: Endpoint) -> str:
    """Why a connect to `endpoint` may have had no answer. On loopback no firewall is in the
    way, but WSL's mirrored networking passes 127.0.0.1 to Windows, where a port nothing
    listens on is not refused at once: the connect then waits out its time instead."""
    if _on_loopback(endpoint):
        return "no answer in time; on loopback a closed port may go unanswered: is it running?"
    return describe_connect_error(TimeoutError())


def hop_connector(hop: Hop, *, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Connector:
    """A connector that opens `hop` or raises `UpstreamUnavailable` naming it."""

    async def connect() -> trio.abc.Stream:
        try:
            return await open_stream(hop.endpoint, timeout=timeout)
        except trio.TooSlowError:
            reason = describe_timeout(hop.endpoint)
        except OSError as exc:
            reason = describe_connect_error(exc)
        raise UpstreamUnavailable(
            f"{hop.name} is not reachable at {hop.endpoint} ({reason}); {hop.fix}"
        )

    return connect
