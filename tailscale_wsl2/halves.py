"""Which half runs here, where it listens and where it relays to.

Planning is kept apart from running: `plan_half` turns the command-line options
and what discovery found into a `WindowsHalf` or `WslHalf` value (pure, so the
tests cover every combination), and `run_half` opens the listener and runs the
relay until Ctrl+C or SIGTERM.

The Windows half listens on one of three kinds of address: the one given with
`--listen`; 127.0.0.1 under mirrored networking (WSL2 reaches Windows through
loopback there, and no vEthernet (WSL) adapter exists); or, by default, the
vEthernet (WSL) adapter's, followed as WSL creates and re-creates it
(`adapter_watch.py`). It relays to Tailscale's LocalAPI wherever the installed
Tailscale serves it (`windows_upstream.py`) unless `--upstream` names a place.
"""

import ipaddress
import logging
import math
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Literal

import trio

from .adapter_watch import ListAdapters, RebindingListener, follow_wsl_adapter
from .discovery import LOOPBACK, Discovered
from .endpoints import Endpoint, TcpEndpoint, parse_endpoint, parse_ip
from .errors import ActionableError
from .heap import settle_after_start_up
from .ipconfig import WslAdapter
from .link import IPNetwork, admit_windows_peer, authenticated_connector
from .linkkey import load_key, load_or_create_key
from .listeners import open_tcp_listener
from .relay import Relay
from .sessions import link_sessions, session_at_once, session_connector, start_session_mode
from .side import Side
from .sockets import RawSocketListener
from .upstream import Connector, Hop, hop_connector
from .warm import WarmLinks
from .windows_upstream import LEGACY_LOCALAPI, AutoLocalApi, LocalApiAuto

__all__ = [
    "LEGACY_LOCALAPI",  # doctor's, from before windows_upstream.py
    "Discoverers",
    "Options",
    "WindowsHalf",
    "WindowsLookups",
    "WslHalf",
    "plan_half",
    "run_half",
]

log = logging.getLogger(__name__)

DEFAULT_PORT = 41113
DEFAULT_SOCKET = Path("/var/run/tailscale/tailscaled.sock")

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
    # `up` waits for the vEthernet (WSL) adapter when WSL has not started yet; doctor reports it.
    wait_for_wsl: bool = False


@dataclass(frozen=True)
class WindowsHalf:
    # listen and allowed_peers are None while the WSL adapter does not exist (wait_for_wsl).
    listen: TcpEndpoint | None
    listen_found_by: str
    allowed_peers: IPNetwork | None
    upstream: Hop | LocalApiAuto
    key_file: Path | None  # None: --insecure-no-auth
    port: int
    follow_adapter: bool  # rebind as the vEthernet (WSL) adapter comes, goes and moves


@dataclass(frozen=True)
class WslHalf:
    socket: Path
    socket_mode: int
    socket_group: int | None
    upstream: Hop
    upstream_found_by: str
    key_file: Path | None  # None: --insecure-no-auth


Half = WindowsHalf | WslHalf


def _nat_unless_told() -> tuple[str, str]:
    return "nat", "WSL's default"


@dataclass(frozen=True)
class Discoverers:
    """The system look-ups planning may need; tests pass canned answers."""

    windows_adapter: Callable[[], WslAdapter | None]  # None: WSL has not started since boot
    wsl_host_address: Callable[[], Discovered]
    windows_key_file: Callable[[], Path]
    wsl_key_file: Callable[[], Path]
    # The WSL networking mode as Windows configures it (.wslconfig), and where that came from.
    windows_networking_mode: Callable[[], tuple[str, str]] = _nat_unless_told


def parse_upstream_option(text: str | None) -> Endpoint | None:
    """`--upstream`: None for the default ("auto": discovered, or on Windows decided
    per connection), else the endpoint it names."""
    if not text or text == "auto":
        return None
    try:
        return parse_endpoint(text)
    except ValueError as exc:
        raise ActionableError(f"--upstream: {exc}") from None


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


def _no_wsl_adapter() -> ActionableError:
    return ActionableError(
        "no vEthernet (WSL) adapter: WSL has not started since Windows booted",
        "start WSL (e.g. run `wsl true`), then run this again, or pass --listen ADDR",
    )


def _wsl_adapter(discover: Discoverers) -> WslAdapter:
    adapter = discover.windows_adapter()
    if adapter is None:
        raise _no_wsl_adapter()
    return adapter


def _loopback_peers(address: str) -> IPNetwork:
    version = ipaddress.ip_address(address).version
    return ipaddress.ip_network("127.0.0.0/8" if version == 4 else "::1/128")


# Where the Windows half listens, the peers it accepts, and whether it follows the adapter.
WindowsListen = tuple[Discovered | None, IPNetwork | None, bool]


def _listen_given(listen: str, discover: Discoverers) -> WindowsListen:
    found = _override(listen, "--listen")
    address = ipaddress.ip_address(found.address)
    if address.is_loopback:  # mirrored networking, or a test
        return found, _loopback_peers(found.address), False
    adapter = _wsl_adapter(discover)
    if address not in adapter.network:
        raise ActionableError(
            f"--listen {address} is not on the WSL adapter's subnet {adapter.network}",
            "omit --listen, or listen on a loopback address",
        )
    return found, adapter.network, False


def _windows_listen(options: Options, discover: Discoverers) -> WindowsListen:
    if options.listen:
        return _listen_given(options.listen, discover)
    mode, source = discover.windows_networking_mode()
    if mode == "mirrored":
        # No NAT adapter exists; mirrored WSL2 reaches Windows services on 127.0.0.1.
        found = Discovered(LOOPBACK, f"mirrored networking ({source}): WSL2 comes in on loopback")
        return found, _loopback_peers(LOOPBACK), False
    adapter = discover.windows_adapter()
    if adapter is None:
        if not options.wait_for_wsl:
            raise _no_wsl_adapter()
        return None, None, True
    return adapter.found, adapter.network, True


def _key_file(options: Options, default: Callable[[], Path]) -> Path | None:
    if options.insecure_no_auth:
        return None
    return options.key_file or default()


def _windows_upstream(options: Options) -> Hop | LocalApiAuto:
    if options.upstream is None:
        return LocalApiAuto()
    return Hop(
        options.upstream,
        "Tailscale's LocalAPI on Windows",
        "is Tailscale running on Windows? Start it, then run `tailscale-wsl2 doctor`",
    )


def plan_half(
    options: Options, side: Side, discover: Discoverers, environ: Mapping[str, str]
) -> Half:
    if half_for(options, side) == "windows":
        found, allowed_peers, follow_adapter = _windows_listen(options, discover)
        return WindowsHalf(
            listen=TcpEndpoint(found.address, options.port) if found else None,
            listen_found_by=found.method
            if found
            else "the vEthernet (WSL) adapter, once WSL starts",
            allowed_peers=allowed_peers,
            upstream=_windows_upstream(options),
            key_file=_key_file(options, discover.windows_key_file),
            port=options.port,
            follow_adapter=follow_adapter,
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


# SIGINT and SIGTERM as they arrive, from `run_half` on (see there).
ShutdownSignals = AsyncIterator[int]


async def _wait_for_shutdown_signal(signals: ShutdownSignals) -> None:
    async for signum in signals:
        log.info("%s received: shutting down", signal.Signals(signum).name)
        return


WARN_INSECURE = (
    "WARNING: --insecure-no-auth: any program that can reach %s may use this "
    "Windows user's Tailscale (log out, change settings, send files)"
)


def _describe_security(key_file: Path | None, reachable_at: object) -> None:
    if key_file is None:
        log.warning(WARN_INSECURE, reachable_at)
    else:
        log.info("link key: %s", key_file)


async def _relay_until_signal(
    relay: Relay,
    listener: trio.abc.Listener[trio.abc.Stream],
    helpers: list[Callable[[], Awaitable[object]]],
    signals: ShutdownSignals,
) -> None:
    """Serve until SIGINT or SIGTERM, with `helpers` running alongside until then."""
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.serve, [listener])
        settle_after_start_up()  # its garbage goes back to the system (heap.py)
        async with trio.open_nursery() as helping:
            for helper in helpers:
                helping.start_soon(helper)
            await _wait_for_shutdown_signal(signals)
            helping.cancel_scope.cancel()
        relay.stop_accepting()


# --- the WSL2 half ----------------------------------------------------------------------------


async def _open_wsl_socket(half: WslHalf) -> tuple[RawSocketListener, Callable[[], None]]:
    """The WSL2 half's listener, and how to remove its socket file afterwards."""
    if sys.platform != "win32":  # CPython has no Unix sockets on Windows
        from .unix_listener import open_unix_listener  # noqa: PLC0415

        unix = await open_unix_listener(half.socket, mode=half.socket_mode, group=half.socket_group)
        return unix.listener, unix.remove_socket_file
    raise ActionableError(
        "the WSL2 half serves a Unix socket, which Windows does not have",
        "run `tailscale-wsl2 up` inside WSL2, or use --side windows here",
    )


async def _run_wsl_half(half: WslHalf, max_connections: int, signals: ShutdownSignals) -> None:
    connect: Connector = (
        authenticated_connector(half.upstream, load_key(half.key_file))
        if half.key_file
        else hop_connector(half.upstream)
    )
    warm = WarmLinks(start_session_mode(connect))
    relay = Relay(
        session_connector(warm.take, warm.park),
        upstream_at_once=session_at_once(warm.take_parked, warm.park),
        max_connections=max_connections,
    )
    listener, remove_socket_file = await _open_wsl_socket(half)
    log.info("listening on %s (mode %03o)", half.socket, half.socket_mode)
    log.info(
        "relaying to %s at %s (%s)",
        half.upstream.name,
        half.upstream.endpoint,
        half.upstream_found_by,
    )
    _describe_security(half.key_file, half.upstream.endpoint)
    try:
        await _relay_until_signal(relay, listener, [warm.keep_warm], signals)
    finally:
        remove_socket_file()


# --- the Windows half -------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowsLookups:
    """What the running Windows half asks of the system; tests pass fakes."""

    list_adapters: ListAdapters
    # A warning line when the firewall keeps WSL2 out of TCP port N from a subnet, else None.
    # Blocking (it runs netsh), so it runs in a worker thread.
    firewall_warning: Callable[[int, IPv4Network], str | None]


class _CurrentSubnetAdmission:
    """The Windows half's admission, for the subnet it listens on now (it follows the adapter)."""

    def __init__(self, allowed_peers: IPNetwork | None, key: bytes | None) -> None:
        self.allowed_peers = allowed_peers
        self._key = key

    async def __call__(self, stream: trio.abc.Stream) -> str | None:
        if self.allowed_peers is None:
            return "accepted after the WSL adapter went away"
        return await admit_windows_peer(stream, self.allowed_peers, self._key)


def _windows_connector(
    upstream: Hop | LocalApiAuto,
) -> tuple[Connector, list[Callable[[], Awaitable[object]]]]:
    """The connector to the LocalAPI, and what runs at start to log the auto choice."""
    if isinstance(upstream, Hop):
        log.info("relaying to %s at %s", upstream.name, upstream.endpoint)
        return hop_connector(upstream), []
    log.info("relaying to Tailscale's LocalAPI: %s (--upstream auto)", upstream)
    auto = AutoLocalApi(upstream)
    return auto, [auto.probe]


class _WindowsListening:
    """Where the Windows half listens now: binding, rebinding, and the firewall warning."""

    def __init__(
        self, half: WindowsHalf, admission: _CurrentSubnetAdmission, lookups: WindowsLookups | None
    ) -> None:
        self.listener = RebindingListener()
        self._half = half
        self._admission = admission
        self._lookups = lookups
        # Subnets bound to, for the firewall check: a bind must not wait for netsh.
        self._bound_subnets, self._subnets_to_check = trio.open_memory_channel[IPv4Network](
            math.inf
        )

    async def bind(self, address: Discovered, allowed_peers: IPNetwork) -> None:
        endpoint = TcpEndpoint(address.address, self._half.port)
        new = open_tcp_listener(endpoint)  # before any change: a failure changes nothing
        self._admission.allowed_peers = allowed_peers
        await self.listener.replace(new)
        log.info("listening on %s (%s)", endpoint, address.method)
        log.info("accepting connections from %s only", allowed_peers)
        if isinstance(allowed_peers, IPv4Network) and not allowed_peers.is_loopback:
            self._bound_subnets.send_nowait(allowed_peers)

    async def bind_adapter(self, adapter: WslAdapter) -> None:
        await self.bind(adapter.found, adapter.network)

    async def unbind(self) -> None:
        await self.listener.replace(None)

    async def follow_adapter(self) -> None:
        if self._lookups is None:
            raise ValueError("following the WSL adapter needs WindowsLookups")
        await follow_wsl_adapter(self._lookups.list_adapters, self.bind_adapter, self.unbind)

    async def warn_if_firewalled(self) -> None:
        """Check each subnet bound to; warn (one line) when the firewall keeps it out."""
        async for subnet in self._subnets_to_check:
            if self._lookups is None:
                continue
            warning = await trio.to_thread.run_sync(
                self._lookups.firewall_warning, self._half.port, subnet
            )
            if warning:
                log.warning("%s", warning)


async def _run_windows_half(
    half: WindowsHalf,
    max_connections: int,
    lookups: WindowsLookups | None,
    signals: ShutdownSignals,
) -> None:
    key = load_or_create_key(half.key_file) if half.key_file else None
    admission = _CurrentSubnetAdmission(half.allowed_peers, key)
    connect, helpers = _windows_connector(half.upstream)
    relay = Relay(
        connect,
        admit=admission,
        sessions=link_sessions,
        lazy_upstream=True,
        max_connections=max_connections,
    )
    listening = _WindowsListening(half, admission, lookups)
    helpers.append(listening.warn_if_firewalled)
    if half.follow_adapter:
        helpers.append(listening.follow_adapter)
    else:
        # Bound before serving, so that a port in use ends `up` with its one-line error.
        assert half.listen is not None
        assert half.allowed_peers is not None
        fixed = Discovered(half.listen.host, half.listen_found_by)
        await listening.bind(fixed, half.allowed_peers)
    _describe_security(half.key_file, f"TCP port {half.port}")
    await _relay_until_signal(relay, listening.listener, helpers, signals)


async def run_half(
    half: Half, *, max_connections: int, windows: WindowsLookups | None = None
) -> None:
    """Listen, relay until SIGINT or SIGTERM, then shut down cleanly.

    `windows` is needed by a Windows half that follows the WSL adapter, and gives any Windows
    half on the WSL subnet its firewall check.
    """
    raise_open_file_limit()
    # Caught from before the listener exists: a signal that comes while it is being set
    # up (a client may already connect) still ends the half cleanly, socket file removed,
    # instead of Python's default (SIGTERM kills at once; SIGINT raises mid-start-up).
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        if isinstance(half, WindowsHalf):
            await _run_windows_half(half, max_connections, windows, signals)
        else:
            await _run_wsl_half(half, max_connections, signals)
    log.info("stopped")
