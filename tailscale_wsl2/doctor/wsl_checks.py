"""The checks doctor runs inside WSL2, one per hop of `tailscale` -> socket -> Windows.

In order: the platform; the Windows host's address (the same discovery and planning as `up`);
the link key; the Windows half over plain TCP; the link handshake; Tailscale's LocalAPI through
the link; the Unix socket the CLI uses; the `tailscale` CLI itself; and end to end, the request
`tailscale status` makes. Each check adds what later ones need to `WslFindings` (the host, the
default route, the key, the daemon's status).

Every look-up goes through `WslSystem`. `WslContext.open_link` is the one place a link to the
Windows half is opened (TCP, then the relay's own handshake, `open_link`, and a sealed
session on the link), so the checks and the relay cannot drift apart on how the link is made.
A peer that gives no handshake is named as the relay names it (`link.mismatch`), after doctor
has asked it who it is: a Windows half run with --insecure-no-auth, or another program.

Every fix that starts something carries the options doctor was given (`plan.commands`), so the
command works when copied; `sudo` only where this user could not create the socket.
"""

import itertools
import os
import shlex
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path

import trio

from tailscale_wsl2.doctor.link_key import INSECURE, load_link_key
from tailscale_wsl2.doctor.localapi import (
    FULL_STATUS_TARGET,
    STATUS_TARGET,
    DaemonStatus,
    release,
    status_verdict,
)
from tailscale_wsl2.doctor.model import Check, Verdict, failure, ok, warning
from tailscale_wsl2.doctor.probes import (
    HttpAnswer,
    NoAnswer,
    Unreachable,
    UnreachableKind,
    http_get,
    identify_peer,
    try_connect,
)
from tailscale_wsl2.doctor.system import (
    Connect,
    PeerProcess,
    may_create_socket,
)
from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.facts import MAX_SOCKET_PATH_BYTES
from tailscale_wsl2.link.handshake import (
    HandshakeFailed,
    InsecurePeer,
    NoHandshake,
    OtherVersion,
    WrongKey,
    open_link,
)
from tailscale_wsl2.link.key import KeyFileError, KeyProblem, key_fix_from_wsl
from tailscale_wsl2.link.mismatch import (
    FirstWords,
    LinkFixes,
    Said,
    explain_foreign,
    explain_insecure_windows_half,
    explain_no_handshake,
    explain_other_version,
    explain_unexpected_words,
    explain_wrong_key,
)
from tailscale_wsl2.link.sealed import SealedSession, new_scratch_buffers
from tailscale_wsl2.net.connect import Hop
from tailscale_wsl2.net.endpoints import Endpoint, TcpEndpoint, UnixEndpoint
from tailscale_wsl2.net.sockets import PEER_GONE, RawSocketStream
from tailscale_wsl2.plan.commands import link_fixes
from tailscale_wsl2.plan.halves import (
    Discoverers,
    Options,
    WslHalf,
    distro_for_fixes,
    plan_half,
)
from tailscale_wsl2.system import RunCommand
from tailscale_wsl2.windows.firewall import firewall_add_command
from tailscale_wsl2.wsl.discovery import (
    DNS_TUNNELING_NAMESERVER,
    HOST_IP_FIX,
    PROC_NET_ROUTE,
    RESOLV_CONF,
    Candidate,
    DefaultRoute,
    Discovered,
    choose_wsl_host,
    host_candidates,
    parse_default_route,
)
from tailscale_wsl2.wsl.side import DetectedMode, NetworkingMode, Side

__all__ = ["WSL_CHECKS", "WslContext", "WslFindings", "WslSystem"]

OS_RELEASE = Path("/etc/os-release")
PID_1_COMM = Path("/proc/1/comm")

INSTALL_CLI_FIX = (
    "install it: `curl -fsSL https://tailscale.com/install.sh | sh`, then "
    "`sudo systemctl disable --now tailscaled` (only the CLI is needed here)"
)
WINDOWS_SIDE_FIX = (
    "on Windows, start Tailscale, then run `tailscale-wsl2.exe doctor` there to find the broken hop"
)


@dataclass(frozen=True)
class WslSystem:
    """Everything the WSL checks ask of the system; tests pass canned answers."""

    side: Side
    kernel_release: str
    read_file: Callable[[Path], str | None]
    networking_mode: Callable[[], DetectedMode]
    which: Callable[[str], str | None]
    run: RunCommand
    connect: Connect  # plain: TCP to the Windows half, the Unix socket
    discoverers: Discoverers  # `up`'s; the host-address check binds host discovery to its reads
    find_key_file: Callable[[], Path]
    peer_process: Callable[[trio.abc.Stream], PeerProcess | None]
    environ: Mapping[str, str]  # the user's shell environment, as doctor inherits it
    may_create: Callable[[Path], bool] = may_create_socket  # else fixes need sudo


@dataclass
class WslFindings:
    """What earlier checks found for later ones."""

    mode: DetectedMode | None = None
    route: DefaultRoute | None = None
    hop: Hop | None = None
    key: bytes | None = None  # None: --insecure-no-auth
    daemon: DaemonStatus | None = None


@dataclass
class WslContext:
    options: Options
    timeout: float
    system: WslSystem
    found: WslFindings = field(default_factory=WslFindings)

    def fixes(self) -> LinkFixes:
        """The commands fixes name, with the options doctor was given."""
        return link_fixes(
            self.options,
            sudo=not self.system.may_create(self.options.socket),
            distro=distro_for_fixes(self.options, self.system.environ, self.system.discoverers),
        )

    def hop(self) -> Hop:
        """The Windows half as `up` would reach it (set by the host-address check)."""
        if self.found.hop is None:
            raise RuntimeError("the host-address check has not run")
        return self.found.hop

    async def open_link(self) -> trio.abc.Stream | Unreachable:
        """A connection to the Windows half, made as the WSL2 half's relay makes it: where
        there is a key, a sealed session on a link whose handshake proved it both ways;
        raises HandshakeFailed."""
        connected = await try_connect(
            partial(self.system.connect, self.hop().endpoint), self.timeout
        )
        if isinstance(connected, Unreachable) or self.found.key is None:
            return connected
        assert isinstance(connected, RawSocketStream)  # what open_stream makes of TCP
        try:
            link = await open_link(
                connected, self.found.key, new_scratch_buffers(), timeout=self.timeout
            )
        except (HandshakeFailed, *PEER_GONE) as exc:
            await trio.aclose_forcefully(connected)
            if isinstance(exc, HandshakeFailed):
                raise
            raise NoHandshake(b"", self.timeout) from exc
        return SealedSession(link)

    async def identify_windows_half(self, listen_for: float) -> FirstWords | Unreachable:
        """Who holds the Windows half's address, asked on a new connection (`identify_peer`)."""
        connect = partial(self.system.connect, self.hop().endpoint)
        return await identify_peer(
            connect, STATUS_TARGET, listen_for=listen_for, timeout=self.timeout
        )


def _start_wsl_half(ctx: "WslContext") -> str:
    return f"start the WSL2 half: `{ctx.fixes().wsl_up}`"


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value pairs of /etc/os-release, quotes removed."""
    pairs = (line.partition("=") for line in text.splitlines() if not line.startswith("#"))
    return {key.strip(): value.strip().strip("\"'") for key, sep, value in pairs if sep}


# --- platform ---------------------------------------------------------------------------------

_SIDE_NAMES = {
    Side.WSL2: "WSL2",
    Side.WSL1: "WSL1",
    Side.LINUX: "plain Linux",
    Side.WINDOWS: "Windows",
}


async def check_platform(ctx: WslContext) -> Verdict:
    system = ctx.system
    ctx.found.mode = mode = system.networking_mode()
    distro = parse_os_release(system.read_file(OS_RELEASE) or "").get("PRETTY_NAME", "unknown")
    pid_1 = (system.read_file(PID_1_COMM) or "").strip() or "unknown"
    finding = (
        f"{_SIDE_NAMES[system.side]}, {distro}, kernel {system.kernel_release}, "
        f"networking {mode.mode.value}"
    )
    details = [
        f"networking mode {mode.mode.value}, found by: {mode.method}",
        "systemd is PID 1" if pid_1 == "systemd" else f"PID 1 is {pid_1!r}, not systemd",
    ]
    if system.side not in (Side.WSL2, Side.WSL1):
        return warning(
            f"not WSL: {finding}",
            "run doctor inside WSL2; outside it, --host-ip must name the Windows host",
            details,
        )
    if system.side is Side.WSL2 and mode.mode is NetworkingMode.OTHER:
        return warning(
            f"{finding}: neither NAT nor mirrored",
            "set networkingMode=nat (or mirrored) under [wsl2] in %USERPROFILE%\\.wslconfig, "
            "or pass --host-ip",
            details,
        )
    return ok(finding, details)


# --- host-address -----------------------------------------------------------------------------


def _candidate_line(candidate: Candidate) -> str:
    verdict = "usable" if candidate.rejected is None else f"not used: {candidate.rejected}"
    line = f"{candidate.found.address} from {candidate.found.method}: {verdict}"
    if ip_address(candidate.found.address) == DNS_TUNNELING_NAMESERVER:
        line += (
            " (WSL's DNS tunneling puts its own resolver in resolv.conf, so the default route "
            "decides; nothing to fix)"
        )
    return line


def _plan_wsl_half(
    options: Options, side: Side, discoverers: Discoverers, discover: Callable[[], Discovered]
) -> WslHalf:
    """`up`'s plan for the WSL half: --host-ip and --upstream first, else `discover`."""
    # The link key is the link-key check's business: planning here must not look for it.
    options = replace(options, side="wsl", insecure_no_auth=True)
    half = plan_half(options, side, replace(discoverers, wsl_host_address=discover), {})
    if not isinstance(half, WslHalf):
        raise TypeError(f"planned the wrong half: {half!r}")
    return half


async def check_host_address(ctx: WslContext) -> Verdict:
    system = ctx.system
    mode = ctx.found.mode.mode if ctx.found.mode else NetworkingMode.UNKNOWN
    resolv_conf_text = system.read_file(RESOLV_CONF)
    route_text = system.read_file(PROC_NET_ROUTE)
    ctx.found.route = parse_default_route(route_text or "")
    candidates = host_candidates(
        side=system.side,
        mode=mode,
        resolv_conf_text=resolv_conf_text,
        proc_net_route_text=route_text,
    )
    details = [_candidate_line(candidate) for candidate in candidates]
    discover = partial(
        choose_wsl_host,
        side=system.side,
        mode=mode,
        resolv_conf_text=resolv_conf_text,
        proc_net_route_text=route_text,
    )
    try:
        half = _plan_wsl_half(ctx.options, system.side, system.discoverers, discover)
    except ActionableError as exc:
        return failure(exc.what, exc.fix or HOST_IP_FIX, details)
    ctx.found.hop = half.upstream
    finding = f"the Windows half is at {half.upstream.endpoint}"
    if ctx.options.upstream:
        return ok(f"{finding} (--upstream)", details)
    usable = sorted({c.found.address for c in candidates if c.rejected is None})
    if len(usable) > 1 and not ctx.options.host_ip:
        return warning(
            f"{finding}, but the usable discovery methods disagree: {', '.join(usable)}",
            "pass --host-ip with the vEthernet (WSL) address `ipconfig` shows on Windows",
            details,
        )
    return ok(f"{finding} ({half.upstream_found_by})", details)


# --- windows-half -----------------------------------------------------------------------------


def _wsl_subnet(route: DefaultRoute | None, endpoint: Endpoint) -> IPv4Network | None:
    """The WSL subnet for a firewall rule: the default route's, where the Windows half lies in it
    (under NAT it does; under mirrored networking the route leads to the LAN instead)."""
    if route is None or not isinstance(endpoint, TcpEndpoint):
        return None
    host = ip_address(endpoint.host)
    return route.subnet if isinstance(host, IPv4Address) and host in route.subnet else None


def _timed_out_on_loopback(ctx: WslContext, hop: Hop) -> Verdict:
    """Under mirrored networking 127.0.0.1 reaches Windows, where a port nothing listens on is
    not refused at once: a connect can wait out its time. That is no firewall's doing (none
    filters loopback): the likely cause is a Windows half that is not running."""
    return failure(
        f"nothing answered at {hop.endpoint} in time: under mirrored networking a Windows port "
        "that nothing listens on can go unanswered rather than refused, so the Windows half is "
        "most likely not running",
        f"start the Windows half: run `{ctx.fixes().windows_up}` on Windows, then "
        f"`{ctx.fixes().windows_doctor}` there",
    )


def _windows_half_unreachable(ctx: WslContext, hop: Hop, failed: Unreachable) -> Verdict:
    finding = f"cannot connect to the Windows half at {hop.endpoint}: {failed.reason}"
    if failed.kind is UnreachableKind.REFUSED:
        return failure(
            finding, f"start the Windows half: run `{ctx.fixes().windows_up}` on Windows"
        )
    loopback = isinstance(hop.endpoint, TcpEndpoint) and ip_address(hop.endpoint.host).is_loopback
    if failed.kind is UnreachableKind.TIMED_OUT and loopback:
        return _timed_out_on_loopback(ctx, hop)
    if failed.kind is UnreachableKind.TIMED_OUT:
        port = hop.endpoint.port if isinstance(hop.endpoint, TcpEndpoint) else ctx.options.port
        add = firewall_add_command(port, _wsl_subnet(ctx.found.route, hop.endpoint))
        return failure(finding, f"on Windows, run `{add}` (it asks for elevation once)")
    if failed.kind is UnreachableKind.NO_ROUTE:
        return failure(finding, HOST_IP_FIX)
    return failure(finding, hop.fix)


def _link_note(ctx: WslContext) -> str:
    if ctx.options.insecure_no_auth:
        return "no handshake: --insecure-no-auth"
    return "the link key was not tried: there is none"


# How long doctor listens for a peer's first words before it asks with a request instead (an
# older Windows half greets the moment it accepts; this release's waits for the handshake).
FIRST_WORDS_WAIT = 0.5


def _named_by_its_words(received: bytes | None) -> bool:
    """Whether what a peer sent instead of an answer names it: a close, a greeting line or
    other bytes of its own; not silence, nor what a web server makes of the handshake's
    bytes (an HTTP error, or an HTTP/0.9 error page), which a plain request names better."""
    if received is None or received.startswith(b"HTTP/"):
        return False
    return received.count(b"\n") <= 1


async def _no_handshake(ctx: WslContext, hop: Hop, failed: NoHandshake) -> Verdict:
    """A peer that gave no answer to the handshake. When its words do not name it, doctor
    asks it who it is with a request (a Windows half run with --insecure-no-auth relays it
    to the LocalAPI; a web server answers it as it answers everyone) before naming it."""
    fixes = ctx.fixes()
    if _named_by_its_words(failed.received):
        return failure(*explain_no_handshake(hop.endpoint, failed, fixes))
    asked = await ctx.identify_windows_half(listen_for=0)
    if isinstance(asked, Unreachable) or asked.said is Said.CLOSED:
        return failure(*explain_no_handshake(hop.endpoint, failed, fixes))
    if asked.from_this_program:
        return failure(*explain_insecure_windows_half(hop.endpoint, fixes))
    if asked.said is Said.HANDSHAKE:  # it answers a request with KEY_EXPECTED: it is one
        return failure(
            f"the Windows half at {hop.endpoint} took more than {failed.waited:g}s "
            "to answer the handshake",
            f"run doctor with more time: `{fixes.doctor} --timeout 10`",
        )
    return failure(*explain_foreign(hop.endpoint, asked, fixes))


async def _handshake_failed(ctx: WslContext, hop: Hop, failed: HandshakeFailed) -> Verdict:
    if isinstance(failed, NoHandshake):
        return await _no_handshake(ctx, hop, failed)
    if isinstance(failed, WrongKey):
        return failure(*explain_wrong_key(hop.endpoint, ctx.fixes()))
    if isinstance(failed, InsecurePeer):
        return failure(*explain_insecure_windows_half(hop.endpoint, ctx.fixes()))
    if isinstance(failed, OtherVersion):
        return failure(*explain_other_version(hop.endpoint, failed, ctx.fixes()))
    return failure(
        f"the Windows half at {hop.endpoint} failed the link handshake: {failed}",
        f"on Windows, run `{ctx.fixes().windows_doctor}`: it names what holds the port",
    )


async def _check_insecure_windows_half(ctx: WslContext, hop: Hop) -> Verdict:
    """Without a key there is no handshake to fail: ask the peer who it is instead."""
    asked = await ctx.identify_windows_half(listen_for=min(FIRST_WORDS_WAIT, ctx.timeout))
    if isinstance(asked, Unreachable):
        return _windows_half_unreachable(ctx, hop, asked)
    if asked.said is Said.HANDSHAKE:
        what, fix = explain_unexpected_words(hop.endpoint, asked, ctx.fixes())
        return failure(what, f"{fix} (and run doctor without --insecure-no-auth too)")
    if asked.said in (Said.HTTP, Said.OTHER) and not asked.from_this_program:
        return failure(*explain_unexpected_words(hop.endpoint, asked, ctx.fixes()))
    return ok(f"the Windows half accepts connections at {hop.endpoint} ({_link_note(ctx)})")


async def check_windows_half(ctx: WslContext) -> Verdict:
    hop = ctx.hop()
    if ctx.found.key is None and ctx.options.insecure_no_auth:
        return await _check_insecure_windows_half(ctx, hop)
    try:
        connected = await ctx.open_link()
    except HandshakeFailed as exc:
        return await _handshake_failed(ctx, hop, exc)
    if isinstance(connected, Unreachable):
        return _windows_half_unreachable(ctx, hop, connected)
    await connected.aclose()
    if ctx.found.key is None:
        return ok(f"the Windows half accepts connections at {hop.endpoint} ({_link_note(ctx)})")
    return ok(f"the Windows half at {hop.endpoint} accepted the link key")


# --- localapi ---------------------------------------------------------------------------------


async def check_localapi(ctx: WslContext) -> Verdict:
    hop = ctx.hop()
    try:
        connected = await ctx.open_link()
    except HandshakeFailed as exc:
        connected = Unreachable(UnreachableKind.OTHER, f"it refused the link: {exc}")
    if isinstance(connected, Unreachable):
        return failure(f"the Windows half at {hop.endpoint} went away: {connected.reason}", hop.fix)
    answer = await http_get(connected, STATUS_TARGET, ctx.timeout)
    verdict, ctx.found.daemon = status_verdict(
        answer, where=f"the Windows half at {hop.endpoint}", unanswered_fix=WINDOWS_SIDE_FIX
    )
    return verdict


# --- link-key ---------------------------------------------------------------------------------


def _key_fix(ctx: WslContext, exc: KeyFileError) -> str | None:
    """The fix with this run's commands, where the key file's own fix has none to give."""
    if exc.problem is KeyProblem.DENIED:
        return f"run doctor as the user the WSL2 half runs as: `sudo {ctx.fixes().doctor}`"
    return key_fix_from_wsl(exc.problem, ctx.fixes().windows_up)


async def check_link_key(ctx: WslContext) -> Verdict:
    if ctx.options.insecure_no_auth:
        return INSECURE
    verdict, ctx.found.key = load_link_key(
        lambda: ctx.options.key_file or ctx.system.find_key_file(),
        fix_for=partial(_key_fix, ctx),
    )
    return verdict


# --- socket -----------------------------------------------------------------------------------


def _program_words(argv: tuple[str, ...]) -> set[str]:
    """The names a command line runs: its program, a script it hands to an interpreter, and a
    module after `-m` (`python -m tailscale_wsl2 up` runs tailscale_wsl2)."""
    words = {Path(arg).name for arg in argv[:2]}
    words |= {module for flag, module in itertools.pairwise(argv) if flag == "-m"}
    return words


def _is_this_tool(peer: PeerProcess | None, answer: HttpAnswer | NoAnswer) -> bool:
    if peer is not None:
        words = _program_words(peer.argv)
        if "tailscale_wsl2" in words or any(w.startswith("tailscale-wsl2") for w in words):
            return True
    if not isinstance(answer, HttpAnswer):
        return False
    # Only the relay answers 502 with the failing hop; only a daemon on Windows says OS windows.
    if answer.status == 502:
        return "is not reachable at" in answer.first_body_line()
    return '"OS":"windows"' in answer.body.decode("utf-8", "replace").replace(" ", "")


def _is_tailscaled(peer: PeerProcess | None, answer: HttpAnswer | NoAnswer) -> bool:
    # Every tailscaled answer carries Tailscale-Version (platform facts: LocalAPI).
    named = peer is not None and "tailscaled" in _program_words(peer.argv)
    return named or (isinstance(answer, HttpAnswer) and "tailscale-version" in answer.headers)


def _names(status: os.stat_result) -> tuple[str, str]:
    """The owner and group of a file, by name where they have one."""
    uid, gid = status.st_uid, status.st_gid
    if sys.platform == "win32":  # no users and groups by number there
        return str(uid), str(gid)
    import grp  # noqa: PLC0415 (Unix only; this module is imported on Windows too)
    import pwd  # noqa: PLC0415

    try:
        owner = pwd.getpwuid(uid).pw_name
    except KeyError:
        owner = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return owner, group


def _access(status: os.stat_result) -> str:
    owner, group = _names(status)
    return f"mode {stat.S_IMODE(status.st_mode):04o}, owner {owner}:{group}"


def _denied_fix(ctx: WslContext, status: os.stat_result) -> str:
    """Join the socket's group where it has one to join, else restart the half so it does."""
    group = _names(status)[1]
    use_sudo = "or use `sudo tailscale ...`"
    if status.st_gid != 0:
        # $USER as the shell expands it: the command works when copied.
        return (
            f"join its group: `sudo usermod -aG {group} $USER`, then open a new shell; {use_sudo}"
        )
    return (
        "restart the WSL2 half with sudo from your own account, so the socket gets your group: "
        f"`{ctx.fixes().wsl_up}`; {use_sudo}"
    )


def _socket_unreachable(ctx: WslContext, status: os.stat_result, failed: Unreachable) -> Verdict:
    path = ctx.options.socket
    if failed.kind is UnreachableKind.DENIED:
        return failure(
            f"you may not connect to {path} ({_access(status)})", _denied_fix(ctx, status)
        )
    if failed.kind is UnreachableKind.REFUSED:
        return failure(
            f"nothing answers on {path}: a stale socket left by a stopped relay",
            f"{_start_wsl_half(ctx)} (it replaces the stale socket)",
        )
    return failure(f"cannot connect to {path}: {failed.reason}", _start_wsl_half(ctx))


def _socket_answer(
    path: Path, access: str, peer: PeerProcess | None, answer: HttpAnswer | NoAnswer
) -> Verdict:
    said = answer.reason if isinstance(answer, NoAnswer) else f"HTTP {answer.status}"
    details = [f"listener: {peer or 'unknown process'}", f"answer to a status request: {said}"]
    if _is_this_tool(peer, answer):
        return ok(f"tailscale-wsl2 answers on {path} ({access})", details)
    if _is_tailscaled(peer, answer):
        return failure(
            f"a Linux tailscaled answers on {path}, not tailscale-wsl2",
            "stop it: `sudo systemctl disable --now tailscaled`, or run tailscale-wsl2 with "
            "another --socket (and pass `tailscale` the same --socket)",
            details,
        )
    return failure(
        f"another program answers on {path}: {peer or 'unknown process'} ({said})",
        "stop it, or run tailscale-wsl2 with another --socket (and pass `tailscale` the same "
        "--socket)",
        details,
    )


def _socket_path_problem(ctx: WslContext) -> Verdict | None:
    path = ctx.options.socket
    length = len(os.fsencode(path))
    if length > MAX_SOCKET_PATH_BYTES:
        return failure(
            f"{path} is too long for a Unix socket ({length} bytes, at most "
            f"{MAX_SOCKET_PATH_BYTES})",
            "pass a shorter --socket (and `tailscale` the same --socket)",
        )
    return None


def _look_at(ctx: WslContext) -> os.stat_result | Verdict:
    """The socket file's status (through a symbolic link), or the finding that stops here."""
    path = ctx.options.socket
    try:
        return path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return failure(
                f"{path} is a symbolic link to {os.readlink(path)}, which does not exist",
                f"remove the link: `{_maybe_sudo(ctx)}rm {shlex.quote(str(path))}`, "
                f"then {_start_wsl_half(ctx)}",
            )
        return failure(f"no socket at {path}", _start_wsl_half(ctx))
    except PermissionError:
        folder = _nearest_folder(path)
        return failure(
            f"you may not look into {folder} ({_access(folder.stat())})",
            f"use `sudo tailscale ...`, and run doctor with sudo: `sudo {ctx.fixes().doctor}`",
        )
    except OSError as exc:
        return failure(
            f"cannot look at {path}: {exc.strerror or exc}",
            "pass --socket with the path of the socket (and `tailscale` the same --socket)",
        )


def _nearest_folder(path: Path) -> Path:
    """The deepest folder above `path` that this user may look at (to show its mode)."""
    for folder in path.parents:
        try:
            folder.stat()
        except OSError:
            continue
        return folder
    return Path(path.anchor or "/")


def _maybe_sudo(ctx: WslContext) -> str:
    return "" if ctx.system.may_create(ctx.options.socket) else "sudo "


async def check_socket(ctx: WslContext) -> Verdict:
    path = ctx.options.socket
    status = _socket_path_problem(ctx) or _look_at(ctx)
    if isinstance(status, Verdict):
        return status
    if not stat.S_ISSOCK(status.st_mode):
        return failure(
            f"{path} exists but is not a socket",
            "remove it, or run tailscale-wsl2 and `tailscale` with another --socket",
        )
    connected = await try_connect(partial(ctx.system.connect, UnixEndpoint(str(path))), ctx.timeout)
    if isinstance(connected, Unreachable):
        return _socket_unreachable(ctx, status, connected)
    peer = ctx.system.peer_process(connected)
    answer = await http_get(connected, STATUS_TARGET, ctx.timeout)
    verdict = _socket_answer(path, _access(status), peer, answer)
    if path.is_symlink():
        verdict = replace(
            verdict, details=(f"a symbolic link to {os.readlink(path)}", *verdict.details)
        )
    return verdict


# --- cli --------------------------------------------------------------------------------------

# How to install one exact Tailscale release, by the os-release ID or ID_LIKE word.
_INSTALL_COMMANDS = {
    "debian": "sudo apt-get install --allow-downgrades tailscale={version}",
    "ubuntu": "sudo apt-get install --allow-downgrades tailscale={version}",
    "fedora": "sudo dnf install tailscale-{version}",
    "rhel": "sudo dnf install tailscale-{version}",
}
_INSTALL_BY_HAND = (
    "download tailscale_{version}_amd64.tgz from https://pkgs.tailscale.com/stable/#static "
    "and put its `tailscale` first on PATH"
)


def install_command(version: str, os_release: dict[str, str]) -> str:
    """The command that installs CLI release `version` (e.g. `1.76.6`) on this distribution."""
    words = [os_release.get("ID", ""), *os_release.get("ID_LIKE", "").split()]
    template = next((_INSTALL_COMMANDS[w] for w in words if w in _INSTALL_COMMANDS), None)
    return (template or _INSTALL_BY_HAND).format(version=version)


async def check_cli(ctx: WslContext) -> Verdict:
    system = ctx.system
    path = system.which("tailscale")
    if path is None:
        return failure("no `tailscale` CLI on PATH", INSTALL_CLI_FIX)
    answer = system.run([path, "version"])
    if answer is None or answer.returncode != 0 or not answer.output.strip():
        return warning(f"`{path} version` gave no version", INSTALL_CLI_FIX)
    cli_version = answer.output.strip().splitlines()[0].strip()
    daemon = ctx.found.daemon
    if daemon is None:
        return ok(
            f"tailscale {cli_version} at {path}",
            ["not compared with the Windows daemon's version: the LocalAPI did not answer"],
        )
    wanted = release(daemon.version)
    if wanted is not None and release(cli_version) != wanted:
        exact = ".".join(map(str, wanted))
        os_release = parse_os_release(system.read_file(OS_RELEASE) or "")
        return warning(
            f"the CLI is {cli_version}, the Windows daemon {daemon.version}",
            f"install the matching CLI: `{install_command(exact, os_release)}`",
        )
    return ok(f"tailscale {cli_version} at {path}, the Windows daemon's release")


# --- up-defaults ------------------------------------------------------------------------------

# The Linux CLI computes `tailscale up`'s flag defaults for its own OS unless this names another
# (tailscale cmd/tailscale/cli/up.go, effectiveGOOS).
UP_FLAG_GOOS = "TS_DEBUG_UP_FLAG_GOOS"
UP_FLAG_GOOS_FIX = (
    "change single settings with `tailscale set` (e.g. `tailscale set --accept-routes`), or make "
    f"`tailscale up` use Windows' defaults: echo 'export {UP_FLAG_GOOS}=windows' >> ~/.bashrc"
)


async def check_up_defaults(ctx: WslContext) -> Verdict:
    """`tailscale up` here compares its flags against Linux's defaults, while the daemon runs
    Windows' (--accept-routes is on by default on Windows, off on Linux): run without its
    flags re-specified, it refuses, or with --reset puts Windows-only preferences back."""
    goos = ctx.system.environ.get(UP_FLAG_GOOS, "")
    if goos == "windows":
        return ok(f"`tailscale up` uses Windows' flag defaults here ({UP_FLAG_GOOS}=windows)")
    told = f" ({UP_FLAG_GOOS}={goos})" if goos else ""
    return warning(
        f"`tailscale up` here computes its flag defaults for Linux{told}, not for the Windows "
        "daemon it talks to: it may ask for flags again, or reset Windows' preferences",
        UP_FLAG_GOOS_FIX,
    )


# --- end-to-end -------------------------------------------------------------------------------


async def check_end_to_end(ctx: WslContext) -> Verdict:
    path = ctx.options.socket
    connected = await try_connect(partial(ctx.system.connect, UnixEndpoint(str(path))), ctx.timeout)
    if isinstance(connected, Unreachable):
        return failure(f"cannot connect to {path}: {connected.reason}", _start_wsl_half(ctx))
    answer = await http_get(connected, FULL_STATUS_TARGET, ctx.timeout)
    verdict, status = status_verdict(
        answer,
        where=str(path),
        unanswered_fix=f"restart the WSL2 half: `{ctx.fixes().wsl_up}`",
    )
    # The daemon's state was judged by the localapi check already; here only the path counts.
    if status is None:
        return verdict
    # Doctor asks what `tailscale status` asks; whether there is a `tailscale` to ask is the
    # cli check's business, so this line says what was asked, not that the CLI was run.
    return ok(
        f"GET {FULL_STATUS_TARGET} (what `tailscale status` asks) answered through {path}: "
        f"{status.describe()}"
    )


WSL_CHECKS: list[Check[WslContext]] = [
    Check("platform", check_platform),
    Check("host-address", check_host_address, needs=("platform",)),
    Check("link-key", check_link_key),
    Check("windows-half", check_windows_half, needs=("host-address",)),
    Check("localapi", check_localapi, needs=("windows-half", "link-key")),
    Check("socket", check_socket),
    Check("cli", check_cli),
    Check("up-defaults", check_up_defaults, needs=("cli",)),
    Check("end-to-end", check_end_to_end, needs=("socket", "localapi")),
]
