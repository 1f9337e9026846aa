"""Running a planned half: open its listeners, relay until Ctrl+C or SIGTERM, shut down cleanly.

The WSL2 half serves the Unix socket and relays over warm, sealed links; the Windows half
listens where the plan says (its fixed places, such as loopback under mirrored networking, and
the vEthernet (WSL) adapter, followed as WSL re-creates it; one relay serves them all), admits
peers by the network they come from and the link handshake, and relays each session to the
LocalAPI.

What can be known before the event loop starts is settled before it (`prepare_half`): options
that cannot work on this platform are refused, and the key is read, so that a key file that
blocks (a FIFO) or misleads cannot wedge a half that no signal can stop.
"""

import ipaddress
import logging
import math
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Network
from pathlib import Path
from typing import TypeVar

import trio

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.link.admission import admit_windows_peer, authenticated_connector
from tailscale_wsl2.link.handshake import FirstMessages
from tailscale_wsl2.link.key import (
    KeyFileError,
    key_exposure_warning,
    key_fix_from_wsl,
    load_key,
    load_or_create_key,
)
from tailscale_wsl2.link.mismatch import explain_out_of_step
from tailscale_wsl2.link.sealed import SealedSession, new_scratch_buffers, sealed_sessions
from tailscale_wsl2.link.sessions import (
    AnyLink,
    ExplainOutOfStep,
    LinkSession,
    NewSession,
    link_sessions,
    session_at_once,
    session_connector,
    start_session_mode,
)
from tailscale_wsl2.link.warm import WarmLinks
from tailscale_wsl2.net.connect import Connector, Hop, UpstreamUnavailable, hop_connector
from tailscale_wsl2.net.endpoints import (
    Endpoint,
    IPNetwork,
    NamedPipeEndpoint,
    TcpEndpoint,
    UnixEndpoint,
)
from tailscale_wsl2.net.listeners import open_tcp_listener
from tailscale_wsl2.net.sockets import RawSocketListener, RawSocketStream
from tailscale_wsl2.plan.halves import Half, ListenPlace, WindowsHalf, WslHalf
from tailscale_wsl2.relay.core import Relay
from tailscale_wsl2.serve.adapter_watch import (
    WAITING,
    ListAdapters,
    RebindingListener,
    follow_wsl_adapter,
)
from tailscale_wsl2.serve.state import StateReporter, initial_state
from tailscale_wsl2.tuning.heap import settle_after_start_up
from tailscale_wsl2.tuning.open_files import raise_open_file_limit
from tailscale_wsl2.windows.ipconfig import WslAdapter
from tailscale_wsl2.windows.localapi import AutoLocalApi, LocalApiAuto

__all__ = ["WindowsLookups", "prepare_half", "run_half"]

log = logging.getLogger(__name__)

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


Opened = TypeVar("Opened")


def _observed(
    connect: Callable[[], Awaitable[Opened]], report: StateReporter
) -> Callable[[], Awaitable[Opened]]:
    """`connect`, telling `report` whether the next hop answered (it writes only on a change)."""

    async def connect_and_report() -> Opened:
        try:
            stream = await connect()
        except UpstreamUnavailable as exc:
            report.next_hop_unreachable(str(exc))
            raise
        report.next_hop_reachable()
        return stream

    return connect_and_report


async def _probe(connect: Connector) -> None:
    """Connect once and close, so that the log and the state say at start whether it answers."""
    try:
        stream = await connect()
    except UpstreamUnavailable:
        return  # logged where it failed, and reported
    await stream.aclose()


async def _relay_until_signal(
    relay: Relay,
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
    helpers: list[Callable[[], Awaitable[object]]],
    signals: ShutdownSignals,
) -> None:
    """Serve until SIGINT or SIGTERM, with `helpers` running alongside until then."""
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.serve, list(listeners))
        settle_after_start_up()  # its garbage goes back to the system (heap.py)
        async with trio.open_nursery() as helping:
            for helper in helpers:
                helping.start_soon(helper)
            await _wait_for_shutdown_signal(signals)
            helping.cancel_scope.cancel()
        relay.stop_accepting()


# --- before the event loop --------------------------------------------------------------------


def _refuse_where_it_cannot_work(endpoint: Endpoint, option: str, platform: str) -> None:
    if isinstance(endpoint, NamedPipeEndpoint) and platform != "win32":
        raise ActionableError(
            f"{option} npipe:{endpoint}: named pipes exist only on Windows",
            f"drop {option}, or give it tcp:HOST:PORT or unix:PATH",
        )
    if isinstance(endpoint, UnixEndpoint) and platform == "win32":
        raise ActionableError(
            f"{option} unix:{endpoint}: this Windows Python has no Unix sockets",
            f"drop {option}, or give it npipe:NAME or tcp:HOST:PORT",
        )


def prepare_half(half: Half, platform: str = sys.platform) -> bytes | None:
    """What must be settled before the event loop: refuse what cannot work on `platform`,
    and read the link key (None: --insecure-no-auth), warning when others can read it."""
    if isinstance(half, WslHalf):
        if platform == "win32":  # CPython has no Unix sockets on Windows
            raise ActionableError(
                "the WSL2 half serves a Unix socket, which Windows does not have",
                "run `tailscale-wsl2 up` inside WSL2, or use --side windows here",
            )
        _refuse_where_it_cannot_work(half.upstream.endpoint, "--upstream", platform)
    elif isinstance(half.upstream, Hop):
        _refuse_where_it_cannot_work(half.upstream.endpoint, "--upstream", platform)
    if half.key_file is None:
        return None
    if isinstance(half, WslHalf):
        key = _wsl_key(half, half.key_file)
    else:
        key = load_or_create_key(half.key_file)
    if warning := key_exposure_warning(half.key_file):
        log.warning("%s", warning)
    return key


def _wsl_key(half: WslHalf, key_file: Path) -> bytes:
    """The WSL2 half's link key; a missing or spoilt one names the Windows half's start, as
    given."""
    try:
        return load_key(key_file)
    except KeyFileError as exc:
        if (fix := key_fix_from_wsl(exc.problem, half.fixes.windows_up)) is None:
            raise
        raise ActionableError(exc.what, fix) from None


# --- the WSL2 half ----------------------------------------------------------------------------


async def _open_wsl_socket(half: WslHalf) -> tuple[RawSocketListener, Callable[[], None]]:
    """The WSL2 half's listener, and how to remove its socket file (and let go of the path)
    afterwards."""
    if sys.platform != "win32":  # CPython has no Unix sockets on Windows (prepare_half)
        from tailscale_wsl2.net.unix_listener import open_unix_listener  # noqa: PLC0415

        unix = await open_unix_listener(half.socket, mode=half.socket_mode, group=half.socket_group)
        return unix.listener, unix.remove_socket_file
    raise AssertionError("prepare_half refuses the WSL2 half on Windows")


def _wsl_relay(
    half: WslHalf, key: bytes | None, max_connections: int, report: StateReporter
) -> tuple[Relay, Callable[[], Awaitable[None]]]:
    """The WSL2 half's relay over its warm links (sealed, or cleartext without a key), and
    the task that keeps them warm; `report` hears whether the Windows half answers."""
    upstream_name = f"{half.upstream.name} at {half.upstream.endpoint}"
    # Parked links are kept up to the connection cap: a session's link comes back only once
    # both ends have closed, after its client's next connection, so a busy client holds about
    # two, and any lower bound closes links the next burst dials again, a handshake each.
    # No more are ever open than the busiest moment needed.
    if key is not None:
        sealed = WarmLinks(
            _observed(authenticated_connector(half.upstream, key, half.fixes), report),
            max_parked=max_connections,
        )
        return _relay_over(sealed, SealedSession, max_connections, upstream_name)
    clear = WarmLinks(
        start_session_mode(_observed(hop_connector(half.upstream), report)),
        max_parked=max_connections,
    )
    # The bytes of a peer that is no Windows half relaying sessions, as the client's 502 (a
    # sealed link has no such peer: its handshake names them, `admission.py`).
    out_of_step = partial(explain_out_of_step, half.upstream.endpoint, half.fixes)
    new_session = partial(_cleartext_session, explain_out_of_step=out_of_step)
    return _relay_over(clear, new_session, max_connections, upstream_name)


def _relay_over(
    warm: WarmLinks[AnyLink],
    new_session: NewSession[AnyLink],
    max_connections: int,
    upstream_name: str,
) -> tuple[Relay, Callable[[], Awaitable[None]]]:
    """A relay whose clients each get a session on one of `warm`'s links."""
    relay = Relay.for_clients(
        session_connector(warm.take, warm.park, new_session),
        upstream_at_once=session_at_once(warm.take_parked, warm.park, new_session),
        max_connections=max_connections,
        upstream_name=upstream_name,
    )
    return relay, warm.keep_warm


def _cleartext_session(
    link: RawSocketStream,
    recycle: Callable[[RawSocketStream], None],
    *,
    explain_out_of_step: ExplainOutOfStep,
) -> LinkSession[RawSocketStream]:
    return LinkSession(link, recycle, explain_out_of_step)


async def _run_wsl_half(
    half: WslHalf,
    key: bytes | None,
    max_connections: int,
    signals: ShutdownSignals,
    report: StateReporter,
) -> None:
    relay, keep_warm = _wsl_relay(half, key, max_connections, report)
    listener, remove_socket_file = await _open_wsl_socket(half)
    log.info("listening on %s (mode %03o)", half.socket, half.socket_mode)
    log.info(
        "relaying to %s at %s (%s)",
        half.upstream.name,
        half.upstream.endpoint,
        half.upstream_found_by,
    )
    _describe_security(half.key_file, half.upstream.endpoint)
    report.update(
        listening=str(half.socket), relaying_to=f"{half.upstream.name} at {half.upstream.endpoint}"
    )
    try:
        await _relay_until_signal(relay, [listener], [keep_warm], signals)
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


class _PeerNetworks:
    """The Windows half's admission: a peer from a network it listens for (each fixed place's,
    and the adapter's subnet as it is now: it follows the adapter), then the link key."""

    def __init__(self, fixed: Sequence[IPNetwork], key: bytes | None) -> None:
        self._fixed = list(fixed)
        self.adapter: IPNetwork | None = None
        self._key = key
        self._scratch = new_scratch_buffers()
        self._seen = FirstMessages()

    async def __call__(
        self, stream: trio.abc.Stream, first_message_opened: Callable[[], None]
    ) -> trio.abc.AsyncResource | str:
        networks = [*self._fixed, *([self.adapter] if self.adapter else [])]
        if not networks:
            return "accepted after the WSL adapter went away"
        assert isinstance(stream, RawSocketStream)  # the Windows half listens on TCP
        peer = ipaddress.ip_address(stream.socket.getpeername()[0])
        # The network the peer is in, if any; else the last, which the refusal then names.
        network = next((net for net in networks if peer in net), networks[-1])
        return await admit_windows_peer(
            stream, network, self._key, self._scratch, first_message_opened, self._seen
        )


def _windows_connector(
    upstream: Hop | LocalApiAuto, report: StateReporter
) -> tuple[Connector, list[Callable[[], Awaitable[object]]]]:
    """The connector to the LocalAPI, and what runs at start to log the auto choice."""
    if isinstance(upstream, Hop):
        log.info("relaying to %s at %s", upstream.name, upstream.endpoint)
        return _observed(hop_connector(upstream), report), []
    log.info("relaying to Tailscale's LocalAPI: %s (--upstream auto)", upstream)
    connect = _observed(AutoLocalApi(upstream), report)
    return connect, [partial(_probe, connect)]


def _upstream_name(upstream: Hop | LocalApiAuto) -> str:
    if isinstance(upstream, Hop):
        return f"{upstream.name} at {upstream.endpoint}"
    return "Tailscale's LocalAPI"


MIRRORED_NO_ADAPTER = (
    "no vEthernet (WSL) adapter, as mirrored networking makes none; should WSL fall back to "
    "NAT, the Windows half listens on the adapter as well"
)


def _relaying_to(upstream: Hop | LocalApiAuto) -> str:
    """Where the Windows half relays, as `status` shows it: the auto choice's candidates too."""
    if isinstance(upstream, Hop):
        return _upstream_name(upstream)
    return f"{_upstream_name(upstream)}: {upstream} (--upstream auto)"


class _WindowsListening:
    """Where the Windows half listens: its fixed places, the adapter it follows (rebinding as
    WSL re-creates it), and the firewall warning for each subnet it binds."""

    def __init__(
        self,
        half: WindowsHalf,
        admission: _PeerNetworks,
        lookups: WindowsLookups | None,
        report: StateReporter,
    ) -> None:
        self.fixed: list[RawSocketListener] = []
        self.adapter = RebindingListener()
        self._half = half
        self._admission = admission
        self._lookups = lookups
        self._report = report
        self._fixed_endpoints: list[TcpEndpoint] = []
        self._adapter_endpoint: TcpEndpoint | None = None
        # Subnets bound to, for the firewall check: a bind must not wait for netsh.
        self._bound_subnets, self._subnets_to_check = trio.open_memory_channel[IPv4Network](
            math.inf
        )

    def listeners(self) -> list[trio.abc.Listener[trio.abc.Stream]]:
        adapter = [self.adapter] if self._half.follow_adapter else []
        return [*self.fixed, *adapter]

    def _report_places(self) -> None:
        """`status` shows every place the half listens on now."""
        places = [*self._fixed_endpoints]
        if self._adapter_endpoint is not None:
            places.append(self._adapter_endpoint)
        self._report.update(listening=", ".join(map(str, places)) or None)

    def _opened(self, endpoint: TcpEndpoint, found_by: str, peers: IPNetwork) -> None:
        log.info("listening on %s (%s)", endpoint, found_by)
        log.info("accepting connections there from %s only", peers)
        if isinstance(peers, IPv4Network) and not peers.is_loopback:
            self._bound_subnets.send_nowait(peers)

    def bind_fixed(self, place: ListenPlace) -> None:
        """Bind a place for the whole run (before serving: a port in use ends `up` with its
        one-line error)."""
        self.fixed.append(open_tcp_listener(place.endpoint))
        self._fixed_endpoints.append(place.endpoint)
        self._opened(place.endpoint, place.found_by, place.allowed_peers)
        self._report_places()

    async def bind_adapter(self, adapter: WslAdapter) -> None:
        endpoint = TcpEndpoint(adapter.found.address, self._half.port)
        new = open_tcp_listener(endpoint)  # before any change: a failure changes nothing
        self._admission.adapter = adapter.network
        await self.adapter.replace(new)
        self._adapter_endpoint = endpoint
        self._opened(endpoint, adapter.found.method, adapter.network)
        self._report_places()
        if self._half.mirrored:
            log.warning(
                "mirrored networking is configured, yet the vEthernet (WSL) adapter exists: "
                "WSL fell back to NAT, and WSL2 comes in on the adapter"
            )

    async def unbind(self) -> None:
        self._admission.adapter = None
        await self.adapter.replace(None)
        self._adapter_endpoint = None
        self._report_places()

    async def follow_adapter(self) -> None:
        if self._lookups is None:
            raise ValueError("following the WSL adapter needs WindowsLookups")
        waiting = MIRRORED_NO_ADAPTER if self._half.mirrored else WAITING
        await follow_wsl_adapter(
            self._lookups.list_adapters, self.bind_adapter, self.unbind, waiting=waiting
        )

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
    key: bytes | None,
    max_connections: int,
    lookups: WindowsLookups | None,
    signals: ShutdownSignals,
    report: StateReporter,
) -> None:
    admission = _PeerNetworks([place.allowed_peers for place in half.fixed], key)
    report.update(relaying_to=_relaying_to(half.upstream))
    connect, helpers = _windows_connector(half.upstream, report)
    relay = Relay.for_links(
        connect,
        admit=admission,
        sessions=link_sessions if key is None else sealed_sessions,
        max_connections=max_connections,
        upstream_name=_upstream_name(half.upstream),
    )
    listening = _WindowsListening(half, admission, lookups, report)
    helpers.append(listening.warn_if_firewalled)
    try:
        for place in half.fixed:
            listening.bind_fixed(place)
    except BaseException:
        for listener in listening.fixed:
            await listener.aclose()
        raise
    if half.follow_adapter:
        helpers.append(listening.follow_adapter)
    _describe_security(half.key_file, f"TCP port {half.port}")
    await _relay_until_signal(relay, listening.listeners(), helpers, signals)


async def run_half(
    half: Half,
    *,
    key: bytes | None,
    max_connections: int,
    windows: WindowsLookups | None = None,
    report: StateReporter | None = None,
) -> None:
    """Listen, relay until SIGINT or SIGTERM, then shut down cleanly.

    `key` is the link key `prepare_half` read (None: --insecure-no-auth). `windows` is needed
    by a Windows half that follows the WSL adapter, and gives any Windows half on the WSL
    subnet its firewall check. `report` keeps the state file `status` reads (none by default).
    """
    raise_open_file_limit()
    is_windows = isinstance(half, WindowsHalf)
    report = report or StateReporter(None, initial_state("windows" if is_windows else "wsl"))
    # Caught from before the listener exists: a signal that comes while it is being set
    # up (a client may already connect) still ends the half cleanly, socket file removed,
    # instead of Python's default (SIGTERM kills at once; SIGINT raises mid-start-up).
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            if isinstance(half, WindowsHalf):
                await _run_windows_half(half, key, max_connections, windows, signals, report)
            else:
                await _run_wsl_half(half, key, max_connections, signals, report)
    finally:
        report.remove()
    log.info("stopped")
