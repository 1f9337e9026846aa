"""Which half runs here, where it listens and where it relays to.

Planning is kept apart from running: `plan_half` turns the command-line options
and what discovery found into a `WindowsHalf` or `WslHalf` value (pure, so the
tests cover every combination), and `run_half` opens the listener and runs the
relay until Ctrl+C or SIGTERM.
"""

import ipaddress
import logging
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import trio

from .discovery import Discovered
from .endpoints import Endpoint, TcpEndpoint, parse_ip
from .errors import ActionableError
from .ipconfig import WslAdapter
from .link import IPNetwork, authenticated_connector, windows_admission
from .linkkey import load_key, load_or_create_key
from .listeners import open_tcp_listener, open_unix_listener
from .relay import Relay
from .side import Side
from .sockets import RawSocketListener
from .upstream import Connector, Hop, hop_connector
from .warm import WarmLinks

__all__ = ["Options", "WindowsHalf", "WslHalf", "plan_half", "run_half"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 41113
DEFAULT_SOCKET = Path("/var/run/tailscale/tailscaled.sock")
# Tailscale for Windows up to 1.32 served the LocalAPI here (safesocket.go,
# WindowsLocalPort); later releases use a named pipe.
LEGACY_LOCALAPI = TcpEndpoint("127.0.0.1", 41112)

HalfName = Literal["windows", "wsl"]


@dataclass(frozen=True)
class Options:
    """What the user asked for on the command line (None: discover it)."""

    side: HalfName | None = None
    port: int = DEFAULT_PORT
    listen: str | None = None
    host_ip: str | None = None
    socket: Path = DEFAULT_SOCKET
    socket_mode: int = 0o660
    upstream: Endpoint | None = None
    key_file: Path | None = None
    insecure_no_auth: bool = False


@dataclass(frozen=True)
class WindowsHalf:
    listen: TcpEndpoint
    listen_found_by: str
    allowed_peers: IPNetwork
    upstream: Hop
    key_file: Path | None  # None: --insecure-no-auth


@dataclass(frozen=True)
class WslHalf:
    socket: Path
    socket_mode: int
    socket_group: int | None
    upstream: Hop
    upstream_found_by: str
    key_file: Path | None  # None: --insecure-no-auth


Half = WindowsHalf | WslHalf


@dataclass(frozen=True)
class Discoverers:
    """The system look-ups planning may need; tests pass canned answers."""

    windows_adapter: Callable[[], WslAdapter]
    wsl_host_address: Callable[[], Discovered]
    windows_key_file: Callable[[], Path]
    wsl_key_file: Callable[[], Path]


def half_for(options: Options, side: Side) -> HalfName:
    if options.side is not None:
        return options.side
    if side is Side.WINDOWS:
        return "windows"
    if side in (Side.WSL2, Side.WSL1):
        return "wsl"
    raise ActionableError(
        "this is neither Windows nor WSL: tailscale-wsl2 connects the `tailscale` CLI "
        "inside WSL2 to Tailscale on the Windows host",
        "run it on Windows and inside WSL2, or force a half with --side windows|wsl",
    )


def socket_group(environ: Mapping[str, str]) -> int | None:
    """The invoking user's group under sudo, so they can use the socket unprivileged."""
    gid = environ.get("SUDO_GID", "")
    return int(gid) if gid.isdigit() else None


def _override(value: str, flag: str) -> Discovered:
    try:
        return Discovered(parse_ip(value), flag)
    except ValueError as exc:
        raise ActionableError(f"{flag}: {exc}", f"pass an IPv4 address to {flag}") from None


def _windows_listen(options: Options, discover: Discoverers) -> tuple[Discovered, IPNetwork]:
    """Where the Windows half listens, and the subnet it accepts connections from."""
    if not options.listen:
        adapter = discover.windows_adapter()
        return adapter.found, adapter.network
    found = _override(options.listen, "--listen")
    address = ipaddress.ip_address(found.address)
    if address.is_loopback:  # mirrored networking, or a test
        return found, ipaddress.ip_network("127.0.0.0/8" if address.version == 4 else "::1/128")
    adapter = discover.windows_adapter()
    if address not in adapter.network:
        raise ActionableError(
            f"--listen {address} is not on the WSL adapter's subnet {adapter.network}",
            "omit --listen, or listen on a loopback address",
        )
    return found, adapter.network


def _key_file(options: Options, default: Callable[[], Path]) -> Path | None:
    if options.insecure_no_auth:
        return None
    return options.key_file or default()


def plan_half(
    options: Options, side: Side, discover: Discoverers, environ: Mapping[str, str]
) -> Half:
    if half_for(options, side) == "windows":
        found, allowed_peers = _windows_listen(options, discover)
        return WindowsHalf(
            listen=TcpEndpoint(found.address, options.port),
            listen_found_by=found.method,
            allowed_peers=allowed_peers,
            upstream=Hop(
                options.upstream or LEGACY_LOCALAPI,
                "Tailscale's LocalAPI on Windows",
                "is Tailscale running on Windows? Start it, then run `tailscale-wsl2 doctor`",
            ),
            key_file=_key_file(options, discover.windows_key_file),
        )
    found = (
        _override(options.host_ip, "--host-ip") if options.host_ip else discover.wsl_host_address()
    )
    return WslHalf(
        socket=options.socket,
        socket_mode=options.socket_mode,
        socket_group=socket_group(environ),
        upstream=Hop(
            options.upstream or TcpEndpoint(found.address, options.port),
            "the Windows half of tailscale-wsl2",
            "run `tailscale-wsl2.exe up` on Windows, then `tailscale-wsl2 doctor` here",
        ),
        upstream_found_by=found.method,
        key_file=_key_file(options, discover.wsl_key_file),
    )


def raise_open_file_limit() -> None:
    """Let the connection cap, not the default 1024 descriptors, be the limit."""
    if sys.platform == "win32":
        return
    import resource  # noqa: PLC0415 (Unix only)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def _wait_for_shutdown_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("%s received: shutting down", signal.Signals(signum).name)
            return


def _nothing_to_remove() -> None:
    """The Windows half leaves no file behind."""


WARN_INSECURE = (
    "WARNING: --insecure-no-auth: any program that can reach %s may use this "
    "Windows user's Tailscale (log out, change settings, send files)"
)


async def _open_listener(half: Half) -> tuple[RawSocketListener, Callable[[], None]]:
    """The half's listener, and how to remove what it created on disk."""
    if isinstance(half, WindowsHalf):
        listener = open_tcp_listener(half.listen)
        log.info("listening on %s (%s)", half.listen, half.listen_found_by)
        return listener, _nothing_to_remove
    unix = await open_unix_listener(half.socket, mode=half.socket_mode, group=half.socket_group)
    log.info("listening on %s (mode %03o)", half.socket, half.socket_mode)
    return unix.listener, unix.remove_socket_file


def _relay_for(half: Half, max_connections: int) -> tuple[Relay, WarmLinks | None]:
    """The relay with this half's link security: admission on Windows, proof in WSL2."""
    if isinstance(half, WindowsHalf):
        key = load_or_create_key(half.key_file) if half.key_file else None
        admit = windows_admission(half.allowed_peers, key)
        return (
            Relay(hop_connector(half.upstream), admit=admit, max_connections=max_connections),
            None,
        )
    connect: Connector = (
        authenticated_connector(half.upstream, load_key(half.key_file))
        if half.key_file
        else hop_connector(half.upstream)
    )
    warm = WarmLinks(connect)
    return Relay(warm.take, max_connections=max_connections), warm


def _describe_security(half: Half) -> None:
    if half.key_file is None:
        where = half.listen if isinstance(half, WindowsHalf) else half.upstream.endpoint
        log.warning(WARN_INSECURE, where)
    else:
        log.info("link key: %s", half.key_file)
    if isinstance(half, WindowsHalf):
        log.info("accepting connections from %s only", half.allowed_peers)


async def run_half(half: Half, *, max_connections: int) -> None:
    """Listen, relay until SIGINT or SIGTERM, then shut down cleanly."""
    raise_open_file_limit()
    relay, warm_links = _relay_for(half, max_connections)
    listener, remove_socket_file = await _open_listener(half)
    found_by = "" if isinstance(half, WindowsHalf) else f" ({half.upstream_found_by})"
    log.info("relaying to %s at %s%s", half.upstream.name, half.upstream.endpoint, found_by)
    _describe_security(half)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve, [listener])
            if warm_links is not None:
                nursery.start_soon(warm_links.keep_warm)
            await _wait_for_shutdown_signal()
            relay.stop_accepting()
            if warm_links is not None:
                warm_links.close()
    finally:
        remove_socket_file()
    log.info("stopped")
