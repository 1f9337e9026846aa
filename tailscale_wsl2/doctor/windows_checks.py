"""The checks doctor runs on Windows: Tailscale, the WSL adapter, the port and the firewall.

In order: the platform (Windows build, WSL installed, its networking mode); the Tailscale
service; Tailscale's LocalAPI (the named pipe of current releases, else the TCP port of
releases up to 1.32); the vEthernet (WSL) adapter the Windows half listens on (planned exactly
as `up` plans it); the link key; who holds the listen port; and whether the firewall lets the
WSL subnet in. Every look-up goes through `WindowsSystem`, so the tests run these on Linux with
real Windows output as fixtures.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from ipaddress import IPv4Network
from pathlib import Path

from tailscale_wsl2.doctor.link_key import INSECURE, load_link_key
from tailscale_wsl2.doctor.localapi import STATUS_TARGET, DaemonStatus, status_verdict
from tailscale_wsl2.doctor.model import Check, Verdict, failure, ok, warning
from tailscale_wsl2.doctor.probes import Unreachable, http_get, identify_peer, try_connect
from tailscale_wsl2.doctor.system import Connect
from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.link.key import windows_key_path
from tailscale_wsl2.link.mismatch import Said
from tailscale_wsl2.net.endpoints import Endpoint, TcpEndpoint
from tailscale_wsl2.plan.commands import windows_up_command
from tailscale_wsl2.plan.halves import Discoverers, Options, WindowsHalf, plan_half
from tailscale_wsl2.system import RunCommand
from tailscale_wsl2.windows.firewall import (
    SHOW_RULES,
    RuleSpec,
    add_rule_fix,
    this_program,
)
from tailscale_wsl2.windows.firewall_rules import firewall_coverage
from tailscale_wsl2.windows.localapi import LEGACY_LOCALAPI, LOCALAPI_PIPE
from tailscale_wsl2.windows.tools import (
    Listener,
    ServiceState,
    parse_netstat_listeners,
    parse_sc_query,
    parse_tasklist_image,
)
from tailscale_wsl2.wsl.side import Side

__all__ = ["WINDOWS_CHECKS", "WindowsContext", "WindowsFindings", "WindowsSystem"]

# How long the port's holder may take to greet before it is asked with a request instead.
FIRST_WORDS_WAIT = 0.5


def start_windows_half(options: Options) -> str:
    """The fix that starts the Windows half as doctor was told it runs."""
    return f"start the Windows half: `{windows_up_command(options, from_wsl=False)}`"


@dataclass(frozen=True)
class WindowsSystem:
    """Everything the Windows checks ask of the system; tests pass canned answers."""

    release: str  # platform.release(): "10", "11"
    version: str  # platform.version(): "10.0.22631"
    environ: Mapping[str, str]
    path_exists: Callable[[Path], bool]
    run: RunCommand
    discoverers: Discoverers  # `up`'s
    connect: Connect  # to the LocalAPI


@dataclass
class WindowsFindings:
    """What earlier checks found for later ones."""

    half: WindowsHalf | None = None
    daemon: DaemonStatus | None = None


@dataclass
class WindowsContext:
    options: Options
    timeout: float
    system: WindowsSystem
    found: WindowsFindings = field(default_factory=WindowsFindings)

    def wsl_subnet(self) -> IPv4Network | None:
        """The WSL subnet the Windows half serves (found by the wsl-adapter check); None where
        it listens on loopback."""
        peers = self.found.half.allowed_peers if self.found.half else None
        return peers if isinstance(peers, IPv4Network) and not peers.is_loopback else None


# --- platform ---------------------------------------------------------------------------------


def _wsl_installed(system: WindowsSystem) -> bool:
    status = system.run(["wsl.exe", "--status"])
    if status is not None and status.returncode == 0:
        return True
    # `wsl --status` fails on some releases before a distribution is installed; the binary
    # being there is the fallback evidence.
    system_root = Path(system.environ.get("SystemRoot", r"C:\Windows"))
    return system.path_exists(system_root / "System32" / "wsl.exe")


async def check_platform(ctx: WindowsContext) -> Verdict:
    system = ctx.system
    windows = f"Windows {system.release} ({system.version})"
    mode, source = system.discoverers.windows_networking_mode()
    details = [f"WSL networking mode {mode} ({source})"]
    if not _wsl_installed(system):
        return failure(
            f"{windows}: WSL is not installed",
            "install it in an elevated PowerShell: `wsl --install`, then restart Windows",
            details,
        )
    return ok(f"{windows}, WSL installed, networking {mode}", details)


# --- tailscale-service ------------------------------------------------------------------------

_SERVICE_VERDICTS: dict[ServiceState, Callable[[], Verdict]] = {
    ServiceState.RUNNING: lambda: ok("the Tailscale service is running"),
    ServiceState.STOPPED: lambda: failure(
        "the Tailscale service is stopped",
        "start Tailscale from the Start menu, or `net start Tailscale` in an elevated shell",
    ),
    ServiceState.NOT_INSTALLED: lambda: failure(
        "Tailscale is not installed (no Tailscale service)",
        "install Tailscale for Windows: https://tailscale.com/download/windows",
    ),
    ServiceState.PENDING: lambda: warning(
        "the Tailscale service is starting, stopping or paused",
        "wait a moment, then run doctor again",
    ),
    ServiceState.UNKNOWN: lambda: warning(
        "`sc query Tailscale` printed no state", "look at the Tailscale service in services.msc"
    ),
}


async def check_tailscale_service(ctx: WindowsContext) -> Verdict:
    answer = ctx.system.run(["sc", "query", "Tailscale"])
    if answer is None:
        return warning(
            "could not run `sc query Tailscale`", "look at the Tailscale service in services.msc"
        )
    return _SERVICE_VERDICTS[parse_sc_query(answer.output)]()


# --- localapi ---------------------------------------------------------------------------------


def _localapi_endpoints(options: Options) -> Sequence[Endpoint]:
    return [options.upstream] if options.upstream else [LOCALAPI_PIPE, LEGACY_LOCALAPI]


async def check_localapi(ctx: WindowsContext) -> Verdict:
    misses = []
    for endpoint in _localapi_endpoints(ctx.options):
        connected = await try_connect(partial(ctx.system.connect, endpoint), ctx.timeout)
        if isinstance(connected, Unreachable):
            misses.append(f"{endpoint}: {connected.reason}")
            continue
        answer = await http_get(connected, STATUS_TARGET, ctx.timeout)
        verdict, ctx.found.daemon = status_verdict(
            answer,
            where=f"Tailscale's LocalAPI at {endpoint}",
            unanswered_fix="restart Tailscale: quit it from its menu and start it again",
        )
        return replace(verdict, details=(*misses, *verdict.details))
    return failure(
        f"Tailscale's LocalAPI answers nowhere: {'; '.join(misses)}",
        "start Tailscale from the Start menu, and sign in",
    )


# --- wsl-adapter ------------------------------------------------------------------------------


async def check_wsl_adapter(ctx: WindowsContext) -> Verdict:
    # The link key is the link-key check's business: planning here must not look for it.
    options = replace(ctx.options, side="windows", insecure_no_auth=True)
    try:
        half = plan_half(options, Side.WINDOWS, ctx.system.discoverers, {})
    except ActionableError as exc:
        return failure(exc.what, exc.fix or start_windows_half(ctx.options))
    if not isinstance(half, WindowsHalf):
        raise TypeError(f"planned the wrong half: {half!r}")
    ctx.found.half = half
    return ok(
        f"the Windows half listens on {half.listen} for {half.allowed_peers}",
        [f"address found by: {half.listen_found_by}"],
    )


# --- link-key ---------------------------------------------------------------------------------


def _key_path(options: Options, environ: Mapping[str, str]) -> Path:
    return options.key_file or windows_key_path(environ)


async def check_link_key(ctx: WindowsContext) -> Verdict:
    if ctx.options.insecure_no_auth:
        return INSECURE

    def not_made_yet(path: Path) -> Verdict | None:
        if ctx.system.path_exists(path):
            return None
        start = start_windows_half(ctx.options)
        return warning(f"no link key at {path} yet", f"{start} (it creates one)")

    path_of = partial(_key_path, ctx.options, ctx.system.environ)
    return load_link_key(path_of, not_made_yet=not_made_yet)[0]


# --- listen-port ------------------------------------------------------------------------------


def _image_name(ctx: WindowsContext, pid: int) -> str:
    answer = ctx.system.run(["tasklist", "/FI", f"PID eq {pid}", "/FO", "CSV", "/NH"])
    image = parse_tasklist_image(answer.output) if answer else None
    return f"{image or 'an unknown program'} (pid {pid})"


def _is_this_tool(holder: str) -> bool:
    return holder.lower().startswith("tailscale-wsl2")


def _listens_where_planned(holders: list[Listener], planned: TcpEndpoint | None) -> bool:
    wildcard = ("0.0.0.0", "::")
    return planned is None or any(h.address in (planned.host, *wildcard) for h in holders)


async def _ask_holder(ctx: WindowsContext, holder: Listener) -> str | None:
    """None when the program on the port is a Windows half of tailscale-wsl2 all the same (run
    as `python.exe`, say); else what it looks like, in a few words."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(holder.address, holder.address)
    asked = await identify_peer(
        partial(ctx.system.connect, TcpEndpoint(host, holder.port)),
        STATUS_TARGET,
        listen_for=min(FIRST_WORDS_WAIT, ctx.timeout),
        timeout=ctx.timeout,
    )
    if isinstance(asked, Unreachable):
        return f"it cannot be asked ({asked.reason})"
    if asked.said is Said.HANDSHAKE or asked.from_this_program:
        return None
    return asked.describe()


async def check_listen_port(ctx: WindowsContext) -> Verdict:
    port = ctx.options.port
    answer = ctx.system.run(["netstat", "-ano", "-p", "TCP"])
    if answer is None:
        return warning("could not run `netstat -ano -p TCP`", f"check port {port} by hand")
    holders = [found for found in parse_netstat_listeners(answer.output) if found.port == port]
    if not holders:
        return warning(f"nothing listens on port {port}", start_windows_half(ctx.options))
    names = {holder.pid: _image_name(ctx, holder.pid) for holder in holders}
    others = [holder for holder in holders if not _is_this_tool(names[holder.pid])]
    if others and (said := await _ask_holder(ctx, others[0])) is not None:
        held_by = ", ".join(names[holder.pid] for holder in others)
        return failure(
            f"port {port} is held by {held_by}, not a Windows half of tailscale-wsl2: {said}",
            f"stop it: `taskkill /PID {others[0].pid}`, or run both halves with another --port",
        )
    where = ", ".join(f"{holder.address}:{port}" for holder in holders)
    planned = ctx.found.half.listen if ctx.found.half else None
    if not _listens_where_planned(holders, planned):
        return warning(
            f"tailscale-wsl2 listens on {where}, but the WSL adapter is now at {planned}",
            "restart the Windows half (WSL changed the adapter's address since it started): "
            f"`{windows_up_command(ctx.options, from_wsl=False)}`",
        )
    return ok(f"{', '.join(names.values())} listens on {where}")


# --- firewall ---------------------------------------------------------------------------------


async def check_firewall(ctx: WindowsContext) -> Verdict:
    port, subnet = ctx.options.port, ctx.wsl_subnet()
    if subnet is None:
        return ok("not needed: the Windows half listens on loopback")
    answer = ctx.system.run(SHOW_RULES)
    coverage = firewall_coverage(answer.output if answer else None, port, subnet)
    fix = add_rule_fix(RuleSpec(port, subnet, this_program()))
    if coverage.verdict == "unreadable":
        return warning(
            "could not read the firewall rules (is this Windows not in English?)",
            f"make sure inbound TCP {port} from {subnet} is allowed; if not, {fix}",
        )
    if coverage.verdict == "blocked":
        return failure(
            f"the firewall rule {coverage.rule!r} blocks TCP {port} from {subnet}",
            "disable it or narrow its scope in wf.msc (Inbound Rules): Block rules win over Allow",
        )
    if coverage.verdict == "missing":
        return failure(f"no firewall rule allows TCP {port} from {subnet}", fix)
    return ok(f"the firewall rule {coverage.rule!r} allows TCP {port} from {subnet}")


WINDOWS_CHECKS: list[Check[WindowsContext]] = [
    Check("platform", check_platform),
    Check("tailscale-service", check_tailscale_service),
    Check("localapi", check_localapi, needs=("tailscale-service",)),
    Check("wsl-adapter", check_wsl_adapter, needs=("platform",)),
    Check("link-key", check_link_key),
    Check("listen-port", check_listen_port),
    Check("firewall", check_firewall, needs=("wsl-adapter",)),
]
