"""Running a planned half: open its listener, relay until Ctrl+C or SIGTERM, shut down cleanly.

The WSL2 half serves the Unix socket and relays over warm, sealed links; the Windows half
listens where the plan says (following the vEthernet (WSL) adapter as WSL re-creates it), admits
peers by subnet and link handshake, and relays each session to the LocalAPI.

What can be known before the event loop starts is settled before it (`prepare_half`): options
that cannot work on this platform are refused, and the key is read, so that a key file that
blocks (a FIFO) or misleads cannot wedge a half that no signal can stop.
"""

import logging
import math
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Network
from pathlib import Path

import trio

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.link.admission import admit_windows_peer, authenticated_connector
from tailscale_wsl2.link.handshake import FirstMessages
from tailscale_wsl2.link.key import (
    KeyFileError,
    KeyProblem,
    key_exposure_warning,
    load_key,
    load_or_create_key,
)
from tailscale_wsl2.link.mismatch import explain_out_of_step
from tailscale_wsl2.link.sealed import SealedSession, new_scratch_buffers, sealed_sessions
from tailscale_wsl2.link.sessions import (
    ExplainOutOfStep,
    LinkSession,
    link_sessions,
    session_at_once,
    session_connector,
    start_session_mode,
)
from tailscale_wsl2.link.warm import WarmLinks
from tailscale_wsl2.net.connect import Connector, Hop, hop_connector
from tailscale_wsl2.net.endpoints import (
    Discovered,
    Endpoint,
    IPNetwork,
    NamedPipeEndpoint,
    TcpEndpoint,
    UnixEndpoint,
)
from tailscale_wsl2.net.listeners import open_tcp_listener
from tailscale_wsl2.net.sockets import RawSocketListener, RawSocketStream
from tailscale_wsl2.plan.halves import Half, WindowsHalf, WslHalf
from tailscale_wsl2.relay.core import Relay
from tailscale_wsl2.serve.adapter_watch import ListAdapters, RebindingListener, follow_wsl_adapter
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


# --- before the event loop --------------------------------------------------------------------


def _refuse_where_it_cannot_work(endpoint: Endpoint, option: str, platform: str) -> None:
    if isinstance(endpoint, NamedPipeEndpoint) and platform != "win32":
        raise ActionableError(
            f"{option} {endpoint}: named pipes exist only on Windows",
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
    """The WSL2 half's link key; a missing one names the Windows half's start, as given."""
    try:
        return load_key(key_file)
    except KeyFileError as exc:
        if exc.problem is not KeyProblem.MISSING:
            raise
        raise ActionableError(
            exc.what, f"run `{half.fixes.windows_up}` on Windows first (it creates the key)"
        ) from None


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
    half: WslHalf, key: bytes | None, max_connections: int
) -> tuple[Relay, Callable[[], Awaitable[None]]]:
    """The WSL2 half's relay over its warm links (sealed, or cleartext without a key), and
    the task that keeps them warm."""
    upstream_name = f"{half.upstream.name} at {half.upstream.endpoint}"
    if key is not None:
        sealed = WarmLinks(authenticated_connector(half.upstream, key, half.fixes))
        relay = Relay.for_clients(
            session_connector(sealed.take, sealed.park, SealedSession),
            upstream_at_once=session_at_once(sealed.take_parked, sealed.park, SealedSession),
            max_connections=max_connections,
            upstream_name=upstream_name,
        )
        return relay, sealed.keep_warm
    clear = WarmLinks(start_session_mode(hop_connector(half.upstream)))
    # The bytes of a peer that is no Windows half relaying sessions, as the client's 502 (a
    # sealed link has no such peer: its handshake names them, `admission.py`).
    out_of_step = partial(explain_out_of_step, half.upstream.endpoint, half.fixes)
    new_session = partial(_cleartext_session, explain_out_of_step=out_of_step)
    relay = Relay.for_clients(
        session_connector(clear.take, clear.park, new_session),
        upstream_at_once=session_at_once(clear.take_parked, clear.park, new_session),
        max_connections=max_connections,
        upstream_name=upstream_name,
    )
    return relay, clear.keep_warm


def _cleartext_session(
    link: RawSocketStream,
    recycle: Callable[[RawSocketStream], None],
    *,
    explain_out_of_step: ExplainOutOfStep,
) -> LinkSession[RawSocketStream]:
    return LinkSession(link, recycle, explain_out_of_step)


async def _run_wsl_half(
    half: WslHalf, key: bytes | None, max_connections: int, signals: ShutdownSignals
) -> None:
    relay, keep_warm = _wsl_relay(half, key, max_connections)
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
        await _relay_until_signal(relay, listener, [keep_warm], signals)
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
        self._scratch = new_scratch_buffers()
        self._seen = FirstMessages()

    async def __call__(
        self, stream: trio.abc.Stream, first_message_opened: Callable[[], None]
    ) -> trio.abc.AsyncResource | str:
        if self.allowed_peers is None:
            return "accepted after the WSL adapter went away"
        return await admit_windows_peer(
            stream, self.allowed_peers, self._key, self._scratch, first_message_opened, self._seen
        )


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


def _upstream_name(upstream: Hop | LocalApiAuto) -> str:
    if isinstance(upstream, Hop):
        return f"{upstream.name} at {upstream.endpoint}"
    return "Tailscale's LocalAPI"


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
    key: bytes | None,
    max_connections: int,
    lookups: WindowsLookups | None,
    signals: ShutdownSignals,
) -> None:
    admission = _CurrentSubnetAdmission(half.allowed_peers, key)
    connect, helpers = _windows_connector(half.upstream)
    relay = Relay.for_links(
        connect,
        admit=admission,
        sessions=link_sessions if key is None else sealed_sessions,
        max_connections=max_connections,
        upstream_name=_upstream_name(half.upstream),
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
    half: Half,
    *,
    key: bytes | None,
    max_connections: int,
    windows: WindowsLookups | None = None,
) -> None:
    """Listen, relay until SIGINT or SIGTERM, then shut down cleanly.

    `key` is the link key `prepare_half` read (None: --insecure-no-auth). `windows` is needed
    by a Windows half that follows the WSL adapter, and gives any Windows half on the WSL
    subnet its firewall check.
    """
    raise_open_file_limit()
    # Caught from before the listener exists: a signal that comes while it is being set
    # up (a client may already connect) still ends the half cleanly, socket file removed,
    # instead of Python's default (SIGTERM kills at once; SIGINT raises mid-start-up).
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        if isinstance(half, WindowsHalf):
            await _run_windows_half(half, key, max_connections, windows, signals)
        else:
            await _run_wsl_half(half, key, max_connections, signals)
    log.info("stopped")
