"""Every WSL check in every outcome, with the system look-ups fed real-world samples."""

import errno
import os
from dataclasses import replace
from functools import partial
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
import trio
import trio.testing

from tailscale_wsl2.doctor.localapi import DaemonStatus
from tailscale_wsl2.doctor.model import Status, Verdict, run_checks
from tailscale_wsl2.doctor.system import PeerProcess, peer_process
from tailscale_wsl2.doctor.wsl_checks import (
    OS_RELEASE,
    PID_1_COMM,
    WSL_CHECKS,
    WslContext,
    WslSystem,
    check_cli,
    check_end_to_end,
    check_host_address,
    check_link_key,
    check_localapi,
    check_platform,
    check_socket,
    check_up_defaults,
    check_windows_half,
)
from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.link.sessions import NO_AUTH_HERE
from tailscale_wsl2.net.connect import Hop, open_stream
from tailscale_wsl2.net.endpoints import Endpoint, TcpEndpoint
from tailscale_wsl2.plan.halves import Discoverers, Options
from tailscale_wsl2.system import CommandResult
from tailscale_wsl2.wsl.discovery import HOST_IP_FIX, PROC_NET_ROUTE, RESOLV_CONF, DefaultRoute
from tailscale_wsl2.wsl.side import (
    LOOPBACK0_METHOD,
    WSLINFO_METHOD,
    DetectedMode,
    NetworkingMode,
    Side,
)
from tests.support import localapi_standin
from tests.support.doctor_fakes import (
    KEY,
    answering,
    fixture,
    leave_stale_socket,
    never,
    plain_answer,
    read_head,
    silent,
    status_answer,
    tcp_server,
    unix_server,
)

UBUNTU = 'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nNAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\n'
WSL2_RELEASE = "5.15.153.1-microsoft-standard-WSL2"
FILES = {
    OS_RELEASE: UBUNTU,
    PID_1_COMM: "systemd\n",
    RESOLV_CONF: fixture("resolv/wsl-generated.conf"),
    PROC_NET_ROUTE: fixture("route/nat.txt"),
}
NAT = DetectedMode(NetworkingMode.NAT, WSLINFO_METHOD)


def system(**changes: object) -> WslSystem:
    files = {**FILES, **changes.pop("files", {})}  # type: ignore[dict-item]
    base = WslSystem(
        side=Side.WSL2,
        kernel_release=WSL2_RELEASE,
        read_file=files.get,
        networking_mode=lambda: NAT,
        which=lambda name: None,
        run=never,
        connect=open_stream,
        discoverers=Discoverers(never, never, never, never),
        find_key_file=never,
        peer_process=peer_process,
        environ={},
        may_create=lambda path: False,  # as a user without sudo: fixes that start a half say sudo
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def context(options: Options | None = None, **changes: object) -> WslContext:
    return WslContext(options or Options(), 2.0, system(**changes))


def at(port: int, ctx: WslContext, key: bytes | None = KEY) -> WslContext:
    """`ctx` as the checks before windows-half leave it, for a Windows half on `port`."""
    hop = Hop(TcpEndpoint("127.0.0.1", port), "the Windows half of tailscale-wsl2", "HOP FIX")
    ctx.found.hop, ctx.found.key = hop, key
    return ctx


# --- platform ---------------------------------------------------------------------------------


async def test_platform_wsl2() -> None:
    verdict = await check_platform(context())
    assert verdict.status is Status.OK
    assert verdict.finding == f"WSL2, Ubuntu 24.04.1 LTS, kernel {WSL2_RELEASE}, networking nat"
    assert verdict.details == (
        "networking mode nat, found by: wslinfo --networking-mode",
        "systemd is PID 1",
    )


async def test_platform_wsl1_without_systemd() -> None:
    ctx = context(side=Side.WSL1, files={PID_1_COMM: "init\n"})
    verdict = await check_platform(ctx)
    assert verdict.status is Status.OK
    assert verdict.finding.startswith("WSL1, ")
    assert "PID 1 is 'init', not systemd" in verdict.details


async def test_platform_plain_linux_is_a_warning() -> None:
    mode = DetectedMode(NetworkingMode.NAT, "no loopback0")
    verdict = await check_platform(context(side=Side.LINUX, networking_mode=lambda: mode))
    assert verdict.status is Status.WARNING
    assert verdict.finding.startswith("not WSL: plain Linux, Ubuntu 24.04.1 LTS")
    assert verdict.fix == "run doctor inside WSL2; outside it, --host-ip must name the Windows host"


async def test_platform_bridged_networking_is_a_warning() -> None:
    bridged = DetectedMode(NetworkingMode.OTHER, WSLINFO_METHOD)
    verdict = await check_platform(context(networking_mode=lambda: bridged))
    assert verdict.status is Status.WARNING
    assert verdict.fix is not None
    assert "networkingMode=nat" in verdict.fix


# --- host-address -----------------------------------------------------------------------------


async def host_address(ctx: WslContext, mode: DetectedMode = NAT) -> Verdict:
    ctx.found.mode = mode
    return await check_host_address(ctx)


async def test_host_address_nat_with_generated_resolv_conf() -> None:
    ctx = context()
    verdict = await host_address(ctx)
    assert verdict == Verdict(
        Status.OK,
        "the Windows half is at 172.27.64.1:41113 "
        "(nameserver in /etc/resolv.conf (agrees with the default route))",
        None,
        (
            "127.0.0.1 from mirrored networking: loopback: not used: "
            "loopback reaches Windows only when mirrored",
            "172.27.64.1 from nameserver in /etc/resolv.conf (agrees with the default route): "
            "usable",
            "172.27.64.1 from default route gateway in /proc/net/route: usable",
        ),
    )
    assert ctx.found.hop is not None
    assert ctx.found.route is not None
    assert ctx.found.route.subnet == IPv4Network("172.27.64.0/20")


async def test_host_address_explains_dns_tunneling_as_info() -> None:
    ctx = context(files={RESOLV_CONF: fixture("resolv/dns-tunneling.conf")})
    verdict = await host_address(ctx)
    assert verdict.status is Status.OK
    assert verdict.finding.endswith("(default route gateway in /proc/net/route)")
    [tunneling] = [detail for detail in verdict.details if "10.255.255.254" in detail]
    assert "DNS tunneling" in tunneling
    assert "nothing to fix" in tunneling


async def test_host_address_methods_that_disagree_are_a_warning() -> None:
    ctx = context(files={RESOLV_CONF: "nameserver 172.27.64.5\n"})
    verdict = await host_address(ctx)
    assert verdict.status is Status.WARNING
    assert verdict.finding == (
        "the Windows half is at 172.27.64.5:41113, but the usable discovery methods disagree: "
        "172.27.64.1, 172.27.64.5"
    )
    assert verdict.fix is not None
    assert verdict.fix.startswith("pass --host-ip")


async def test_host_address_mirrored_uses_loopback() -> None:
    mirrored = DetectedMode(NetworkingMode.MIRRORED, LOOPBACK0_METHOD)
    ctx = context(files={PROC_NET_ROUTE: fixture("route/mirrored.txt")})
    verdict = await host_address(ctx, mirrored)
    assert verdict.status is Status.OK
    assert verdict.finding == (
        "the Windows half is at 127.0.0.1:41113 (mirrored networking: loopback)"
    )


async def test_host_address_nothing_usable_is_a_failure() -> None:
    ctx = context(
        files={
            RESOLV_CONF: fixture("resolv/dns-tunneling.conf"),
            PROC_NET_ROUTE: fixture("route/no-default.txt"),
        }
    )
    verdict = await host_address(ctx)
    assert verdict.status is Status.FAILURE
    assert verdict.finding == (
        "cannot find the Windows host's address: no default route in /proc/net/route"
    )
    assert verdict.fix == HOST_IP_FIX


async def test_host_address_host_ip_overrides_even_outside_wsl() -> None:
    ctx = context(Options(host_ip="127.0.0.1", port=5555), side=Side.LINUX)
    verdict = await host_address(ctx)
    assert verdict.status is Status.OK
    assert verdict.finding == "the Windows half is at 127.0.0.1:5555 (--host-ip)"


async def test_host_address_bad_host_ip() -> None:
    verdict = await host_address(context(Options(host_ip="windows.local")))
    assert verdict.status is Status.FAILURE
    assert verdict.finding == "--host-ip: not an IP address: 'windows.local'"


async def test_host_address_upstream() -> None:
    options = Options(host_ip="127.0.0.1", upstream=TcpEndpoint("127.0.0.2", 9))
    verdict = await host_address(context(options))
    assert verdict.finding == "the Windows half is at 127.0.0.2:9 (--upstream)"


# --- link-key ---------------------------------------------------------------------------------


def key_file(tmp_path: Path, text: str = KEY.hex() + "\n") -> Path:
    path = tmp_path / "link.key"
    path.write_text(text)
    return path


async def test_link_key_found_through_windows(tmp_path: Path) -> None:
    path = key_file(tmp_path)
    ctx = context(find_key_file=lambda: path)
    assert await check_link_key(ctx) == Verdict(Status.OK, f"the link key is at {path}")
    assert ctx.found.key == KEY


async def test_link_key_option_wins(tmp_path: Path) -> None:
    ctx = context(Options(key_file=key_file(tmp_path)))
    assert (await check_link_key(ctx)).status is Status.OK


async def test_link_key_missing_or_damaged(tmp_path: Path) -> None:
    verdict = await check_link_key(context(Options(key_file=tmp_path / "none.key")))
    assert verdict.status is Status.FAILURE
    assert verdict.finding == f"no link key at {tmp_path / 'none.key'}"
    # The Windows half's command carries the key file, as Windows names it, so it makes that one.
    assert verdict.fix == (
        f"run `tailscale-wsl2.exe up --key-file {tmp_path / 'none.key'}` on Windows first "
        "(it creates the key)"
    )
    spoilt = key_file(tmp_path, "xyz")
    damaged = await check_link_key(context(Options(key_file=spoilt)))
    assert damaged.finding.endswith("is damaged (expected 64 hex digits)")
    # Made again where the user keeps it: the same command, and the half after it.
    assert damaged.fix == (
        f"delete it, restart the Windows half with `tailscale-wsl2.exe up --key-file {spoilt}` "
        "(it makes a new one), then start this half again"
    )


async def test_link_key_not_found_through_interop() -> None:
    def no_interop() -> Path:
        raise ActionableError("cannot find the link key: asking Windows failed", "pass it")

    verdict = await check_link_key(context(find_key_file=no_interop))
    assert verdict == Verdict(
        Status.FAILURE, "cannot find the link key: asking Windows failed", "pass it"
    )


async def test_link_key_insecure_is_a_warning() -> None:
    verdict = await check_link_key(context(Options(insecure_no_auth=True)))
    assert verdict.status is Status.WARNING
    assert verdict.finding == "no link key: --insecure-no-auth"


# --- windows-half and localapi ----------------------------------------------------------------


async def test_windows_half_accepts_the_link_key() -> None:
    async with tcp_server(answering(status_answer(), KEY)) as port:
        verdict = await check_windows_half(at(port, context()))
    assert verdict == Verdict(
        Status.OK, f"the Windows half at 127.0.0.1:{port} accepted the link key"
    )


async def test_windows_half_refused() -> None:
    with trio.socket.socket() as reserved:  # bound, never listening
        await reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        verdict = await check_windows_half(at(port, context()))
    assert verdict == Verdict(
        Status.FAILURE,
        f"cannot connect to the Windows half at 127.0.0.1:{port}: connection refused",
        "start the Windows half: run `tailscale-wsl2.exe up` on Windows",
    )


async def hang(endpoint: Endpoint) -> trio.abc.Stream:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


async def test_windows_half_timed_out_gets_the_firewall_rule_for_the_wsl_subnet(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ctx = at(41113, context(connect=hang))
    ctx.found.hop = replace(ctx.hop(), endpoint=TcpEndpoint("172.27.64.1", 41113))
    subnet = IPv4Network("172.27.64.0/20")
    ctx.found.route = DefaultRoute(IPv4Address("172.27.64.1"), "eth0", subnet, 0)
    verdict = await check_windows_half(ctx)
    assert verdict.status is Status.FAILURE
    assert verdict.finding == (
        "cannot connect to the Windows half at 172.27.64.1:41113: "
        "no answer in time: is a firewall dropping the connection?"
    )
    assert verdict.fix == (
        "on Windows, run `tailscale-wsl2.exe firewall add --subnet 172.27.64.0/20` "
        "(it asks for elevation once)"
    )


async def test_windows_half_timed_out_on_loopback_is_not_blamed_on_a_firewall(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Mirrored networking: 127.0.0.1 is Windows', where a closed port may go unanswered.
    verdict = await check_windows_half(at(41113, context(connect=hang)))
    assert verdict.status is Status.FAILURE
    assert verdict.finding.startswith(
        "nothing answered at 127.0.0.1:41113 in time: under mirrored networking a Windows port"
    )
    assert verdict.fix is not None
    assert "firewall" not in verdict.finding + verdict.fix
    assert verdict.fix.startswith("start the Windows half: run `tailscale-wsl2.exe up`")


async def test_windows_half_timed_out_on_loopback_names_the_commands_with_the_users_options(
    autojump_clock: trio.testing.MockClock,
) -> None:
    options = Options(port=41200, host_ip="127.0.0.1")
    verdict = await check_windows_half(at(41200, context(options, connect=hang)))
    assert verdict.fix == (
        "start the Windows half: run `tailscale-wsl2.exe up --port 41200 --listen 127.0.0.1` on "
        "Windows, then `tailscale-wsl2.exe doctor --port 41200 --listen 127.0.0.1` there"
    )


async def test_windows_half_no_route() -> None:
    async def no_route(endpoint: Endpoint) -> trio.abc.Stream:
        raise OSError(errno.EHOSTUNREACH, "No route to host")

    verdict = await check_windows_half(at(41113, context(connect=no_route)))
    assert verdict.status is Status.FAILURE
    assert verdict.finding.endswith(": no route to host")
    assert verdict.fix == HOST_IP_FIX


async def test_windows_half_with_another_key() -> None:
    async with tcp_server(answering(status_answer(), bytes(32))) as port:
        verdict = await check_windows_half(at(port, context()))
    assert verdict.status is Status.FAILURE
    assert verdict.finding == (
        f"the Windows half at 127.0.0.1:{port} refused the link key: "
        "the two halves use different keys"
    )
    assert verdict.fix == (
        "restart both so they read the same key: `tailscale-wsl2.exe up` on Windows, "
        "then `sudo tailscale-wsl2 up` here"
    )


async def test_windows_half_that_hangs_up_at_once() -> None:
    async def hang_up(stream: trio.abc.Stream) -> None:
        await stream.aclose()  # what a Windows half does to a peer outside its subnet

    async with tcp_server(hang_up) as port:
        verdict = await check_windows_half(at(port, context()))
    assert verdict.status is Status.FAILURE
    assert verdict.finding == (
        f"the Windows half at 127.0.0.1:{port} closed the connection before the handshake: "
        "it serves another subnet"
    )


async def test_windows_half_without_handshake() -> None:
    async with tcp_server(answering(status_answer())) as port:
        ctx = at(port, context(Options(insecure_no_auth=True)), key=None)
        verdict = await check_windows_half(ctx)
    assert verdict.finding == (
        f"the Windows half accepts connections at 127.0.0.1:{port} "
        "(no handshake: --insecure-no-auth)"
    )


# Peers that are no Windows half expecting the handshake: the relay's words, and doctor asks.


async def greet(banner: bytes, stream: trio.abc.Stream) -> None:
    async with stream:
        await stream.send_all(banner)
        await trio.sleep_forever()


async def quiet_until_asked(answer: bytes, stream: trio.abc.Stream) -> None:
    """Like a web server, or a Windows half run with --insecure-no-auth: silent until asked."""
    async with stream:
        await read_head(stream)
        await stream.send_all(answer)


def quick(ctx: WslContext) -> WslContext:
    ctx.timeout = 0.3  # how long a silent peer is waited for
    return ctx


async def test_windows_half_run_with_insecure_no_auth_is_named() -> None:
    async with tcp_server(partial(quiet_until_asked, status_answer())) as port:
        verdict = await check_windows_half(quick(at(port, context())))
    assert verdict == Verdict(
        Status.FAILURE,
        f"the Windows half at 127.0.0.1:{port} runs with --insecure-no-auth, "
        "and this half expects the link handshake",
        "restart it without --insecure-no-auth: `tailscale-wsl2.exe up` on Windows",
    )


async def test_windows_half_run_with_insecure_no_auth_told_by_its_502_too() -> None:
    line = "Tailscale's LocalAPI on Windows is not reachable at 127.0.0.1:41112"
    answer = plain_answer("502 Bad Gateway", line).replace(
        b"\r\n", b"\r\nServer: tailscale-wsl2\r\n", 1
    )
    async with tcp_server(partial(quiet_until_asked, answer)) as port:
        verdict = await check_windows_half(quick(at(port, context())))
    assert verdict.finding.endswith(
        "runs with --insecure-no-auth, and this half expects the link handshake"
    )


async def test_a_web_server_on_the_port_is_named_as_such() -> None:
    answer = b"HTTP/1.0 404 File not found\r\nServer: SimpleHTTP/0.6\r\n\r\nnope"
    options = Options(port=41200)
    async with tcp_server(partial(quiet_until_asked, answer)) as port:
        verdict = await check_windows_half(quick(at(port, context(options))))
    assert verdict == Verdict(
        Status.FAILURE,
        f"another program holds 127.0.0.1:{port}, not the Windows half of tailscale-wsl2: "
        "it answers HTTP (HTTP/1.0 404 File not found, Server: SimpleHTTP/0.6)",
        "stop it (`tailscale-wsl2.exe doctor --port 41200` on Windows names it), "
        "or run both halves with another --port",
    )


async def test_a_silent_program_on_the_port_is_named_as_such() -> None:
    async with tcp_server(silent) as port:
        verdict = await check_windows_half(quick(at(port, context())))
    assert verdict.finding == (
        f"another program holds 127.0.0.1:{port}, not the Windows half of tailscale-wsl2: "
        "it says nothing"
    )


async def test_a_program_that_greets_first_is_named_without_waiting() -> None:
    async with tcp_server(partial(greet, b"SSH-2.0-OpenSSH_9.6\r\n")) as port:
        ctx = at(port, context())
        with trio.fail_after(1):  # not the handshake's 2 s: the banner is no hello
            verdict = await check_windows_half(ctx)
    assert verdict.finding == (
        f"another program holds 127.0.0.1:{port}, not the Windows half of tailscale-wsl2: "
        "it sent b'SSH-2.0-OpenSSH_9.6\\r\\n'"
    )


async def test_an_older_windows_half_is_named_by_its_greeting() -> None:
    async with tcp_server(partial(greet, b"TSWSL\x01" + bytes(32))) as port:
        with trio.fail_after(1):  # the first version greets at once: no waiting for more
            verdict = await check_windows_half(at(port, context()))
    assert verdict.finding == (
        f"the Windows half at 127.0.0.1:{port} is an older tailscale-wsl2 "
        "(link version 1; this half speaks 2)"
    )
    assert verdict.fix is not None
    assert verdict.fix.startswith("upgrade both halves to the same release (README: Upgrade)")


async def test_a_windows_half_without_the_handshake_says_so_at_once() -> None:
    async def no_auth_here(stream: trio.abc.Stream) -> None:
        async with stream:
            await stream.receive_some(6)  # the start of a link handshake
            await stream.send_all(NO_AUTH_HERE)  # what this release answers with no key

    async with tcp_server(no_auth_here) as port:
        with trio.fail_after(1):  # told by its answer, not after doctor's timeout
            verdict = await check_windows_half(at(port, context()))
    assert verdict.finding == (
        f"the Windows half at 127.0.0.1:{port} runs with --insecure-no-auth, "
        "and this half expects the link handshake"
    )


async def test_insecure_doctor_meets_a_windows_half_that_expects_the_handshake() -> None:
    options = Options(insecure_no_auth=True, key_file=Path("/keys/link.key"))
    async with tcp_server(answering(status_answer(), KEY)) as port:
        verdict = await check_windows_half(at(port, context(options), key=None))
    assert verdict == Verdict(
        Status.FAILURE,
        f"the Windows half at 127.0.0.1:{port} expects the link handshake: it runs without "
        "--insecure-no-auth, and this half with it",
        "restart this half without --insecure-no-auth: "
        "`sudo tailscale-wsl2 up --key-file /keys/link.key` "
        "(and run doctor without --insecure-no-auth too)",
    )


def test_doctor_names_a_key_inside_the_distro_as_windows_reaches_it_also_under_sudo() -> None:
    asks_wsl = Discoverers(never, never, never, never, wsl_distro=lambda: "Debian")
    ctx = context(Options(key_file=Path("/home/me/link.key")), discoverers=asks_wsl)
    assert ctx.fixes().windows_up == (
        'tailscale-wsl2.exe up --key-file "\\\\wsl$\\Debian\\home\\me\\link.key"'
    )


async def test_insecure_doctor_meets_a_web_server() -> None:
    answer = b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n"
    async with tcp_server(partial(quiet_until_asked, answer)) as port:
        ctx = at(port, context(Options(insecure_no_auth=True)), key=None)
        verdict = await check_windows_half(ctx)
    assert verdict.status is Status.FAILURE
    assert verdict.finding.endswith("it answers HTTP (HTTP/1.1 400 Bad Request, Server: nginx)")


async def test_localapi_through_the_windows_half() -> None:
    async with tcp_server(answering(status_answer(), KEY)) as port:
        ctx = at(port, context())
        verdict = await check_localapi(ctx)
    assert verdict.status is Status.OK
    assert verdict.finding.startswith(f"Tailscale {localapi_standin.DAEMON_VERSION} is Running")
    assert ctx.found.daemon is not None


async def test_localapi_needs_login_is_a_warning() -> None:
    answer = status_answer().replace(b'"Running"', b'"NeedsLogin"')
    async with tcp_server(answering(answer, KEY)) as port:
        verdict = await check_localapi(at(port, context()))
    assert verdict.status is Status.WARNING
    assert verdict.fix is not None
    assert verdict.fix.startswith("sign in on Windows")


async def test_localapi_bad_gateway_quotes_the_failing_hop() -> None:
    line = (
        "Tailscale's LocalAPI on Windows is not reachable at 127.0.0.1:41112 (connection "
        "refused); is Tailscale running on Windows? Start it, then run `tailscale-wsl2 doctor`"
    )
    async with tcp_server(answering(plain_answer("502 Bad Gateway", line), KEY)) as port:
        verdict = await check_localapi(at(port, context()))
    assert verdict.status is Status.FAILURE
    assert verdict.finding == (f"the Windows half at 127.0.0.1:{port} answered HTTP 502: {line!r}")
    assert verdict.fix is not None
    assert "`tailscale-wsl2.exe doctor`" in verdict.fix


# --- socket -----------------------------------------------------------------------------------


def socket_context(tmp_path: Path, **changes: object) -> WslContext:
    return context(Options(socket=tmp_path / "tailscaled.sock"), **changes)


async def test_socket_missing(tmp_path: Path) -> None:
    verdict = await check_socket(socket_context(tmp_path))
    assert verdict == Verdict(
        Status.FAILURE,
        f"no socket at {tmp_path / 'tailscaled.sock'}",
        f"start the WSL2 half: `sudo tailscale-wsl2 up --socket {tmp_path / 'tailscaled.sock'}`",
    )


async def test_socket_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "tailscaled.sock").write_text("")
    verdict = await check_socket(socket_context(tmp_path))
    assert verdict.status is Status.FAILURE
    assert verdict.finding.endswith("exists but is not a socket")


async def test_socket_stale(tmp_path: Path) -> None:
    leave_stale_socket(tmp_path / "tailscaled.sock")
    verdict = await check_socket(socket_context(tmp_path))
    assert verdict.status is Status.FAILURE
    assert verdict.finding.endswith(": a stale socket left by a stopped relay")
    assert verdict.fix is not None
    assert "it replaces the stale socket" in verdict.fix


async def test_socket_permission_denied(tmp_path: Path) -> None:
    async def denied(endpoint: Endpoint) -> trio.abc.Stream:
        raise PermissionError(errno.EACCES, "Permission denied")

    leave_stale_socket(tmp_path / "tailscaled.sock")
    (tmp_path / "tailscaled.sock").chmod(0o660)
    verdict = await check_socket(socket_context(tmp_path, connect=denied))
    assert verdict.status is Status.FAILURE
    assert verdict.finding.startswith(f"you may not connect to {tmp_path / 'tailscaled.sock'}")
    assert "mode 0660" in verdict.finding
    assert verdict.fix is not None
    assert "sudo" in verdict.fix


async def test_socket_denied_by_its_group_says_how_to_join_it(tmp_path: Path) -> None:
    async def denied(endpoint: Endpoint) -> trio.abc.Stream:
        raise PermissionError(errno.EACCES, "Permission denied")

    leave_stale_socket(tmp_path / "tailscaled.sock")
    os.chown(tmp_path / "tailscaled.sock", -1, 65534)
    verdict = await check_socket(socket_context(tmp_path, connect=denied))
    group = grp_name(65534)
    assert verdict.finding.endswith(f"(mode {stat_mode(tmp_path)}, owner {user_name()}:{group})")
    assert verdict.fix == (
        f"join its group: `sudo usermod -aG {group} $USER`, then open a new shell; "
        "or use `sudo tailscale ...`"
    )


def grp_name(gid: int) -> str:
    import grp  # noqa: PLC0415

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def user_name() -> str:
    import pwd  # noqa: PLC0415

    return pwd.getpwuid(os.getuid()).pw_name


def stat_mode(tmp_path: Path) -> str:
    return f"{(tmp_path / 'tailscaled.sock').stat().st_mode & 0o7777:04o}"


async def test_socket_through_a_symbolic_link_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "real.sock"
    link = tmp_path / "tailscaled.sock"
    link.symlink_to(real)
    ctx = socket_context(tmp_path)
    async with unix_server(real, answering(status_answer())):
        verdict = await check_socket(ctx)
    assert verdict.status is Status.OK
    assert verdict.details[0] == f"a symbolic link to {real}"


async def test_socket_as_a_dangling_symbolic_link(tmp_path: Path) -> None:
    (tmp_path / "tailscaled.sock").symlink_to(tmp_path / "gone.sock")
    verdict = await check_socket(socket_context(tmp_path))
    assert verdict == Verdict(
        Status.FAILURE,
        f"{tmp_path / 'tailscaled.sock'} is a symbolic link to {tmp_path / 'gone.sock'}, "
        "which does not exist",
        f"remove the link: `sudo rm {tmp_path / 'tailscaled.sock'}`, then start the WSL2 half: "
        f"`sudo tailscale-wsl2 up --socket {tmp_path / 'tailscaled.sock'}`",
    )


async def test_socket_path_too_long_for_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / ("s" * 120)
    verdict = await check_socket(context(Options(socket=path)))
    assert verdict.status is Status.FAILURE
    assert verdict.finding == (
        f"{path} is too long for a Unix socket ({len(os.fsencode(path))} bytes, at most 107)"
    )


async def test_socket_path_through_a_file_is_a_finding(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    verdict = await check_socket(context(Options(socket=tmp_path / "file" / "s.sock")))
    assert verdict == Verdict(
        Status.FAILURE,
        f"cannot look at {tmp_path / 'file' / 's.sock'}: Not a directory",
        "pass --socket with the path of the socket (and `tailscale` the same --socket)",
    )


@pytest.mark.parametrize(
    "answer",
    [
        status_answer(),
        plain_answer(
            "502 Bad Gateway",
            "the Windows half of tailscale-wsl2 is not reachable at 172.27.64.1:41113 "
            "(connection refused); run `tailscale-wsl2.exe up` on Windows",
        ),
    ],
)
async def test_socket_served_by_this_tool_told_by_its_answer(tmp_path: Path, answer: bytes) -> None:
    ctx = socket_context(tmp_path)
    async with unix_server(ctx.options.socket, answering(answer)):
        verdict = await check_socket(ctx)
    assert verdict.status is Status.OK
    assert verdict.finding.startswith(f"tailscale-wsl2 answers on {ctx.options.socket} (mode ")
    # The listener is this test process, found by the socket's peer credentials.
    assert verdict.details[0].endswith(f"(pid {os.getpid()})")


async def test_socket_served_by_this_tool_told_by_its_process(tmp_path: Path) -> None:
    ours = PeerProcess(42, ("/usr/local/bin/tailscale-wsl2", "up"))
    ctx = socket_context(tmp_path, peer_process=lambda stream: ours)
    ctx.timeout = 0.05  # the relay is still waiting for the Windows half
    async with unix_server(ctx.options.socket, silent):
        verdict = await check_socket(ctx)
    assert verdict.status is Status.OK
    assert verdict.details == (
        "listener: /usr/local/bin/tailscale-wsl2 up (pid 42)",
        "answer to a status request: no answer within 0.05 s",
    )


async def test_socket_held_by_a_linux_tailscaled(tmp_path: Path) -> None:
    ctx = socket_context(tmp_path)
    async with unix_server(ctx.options.socket, answering(status_answer(OS="linux"))):
        verdict = await check_socket(ctx)
    assert verdict.status is Status.FAILURE
    assert (
        verdict.finding == f"a Linux tailscaled answers on {ctx.options.socket}, not tailscale-wsl2"
    )
    assert verdict.fix is not None
    assert verdict.fix.startswith("stop it: `sudo systemctl disable --now tailscaled`")


async def test_socket_held_by_something_else(tmp_path: Path) -> None:
    other = PeerProcess(77, ("/usr/bin/python3", "-m", "http.server"))
    ctx = socket_context(tmp_path, peer_process=lambda stream: other)
    async with unix_server(ctx.options.socket, answering(b"SSH-2.0-OpenSSH_9.6\r\n")):
        verdict = await check_socket(ctx)
    assert verdict.status is Status.FAILURE
    assert verdict.finding == (
        f"another program answers on {ctx.options.socket}: /usr/bin/python3 -m http.server "
        "(pid 77) (not an HTTP answer: b'SSH-2.0-OpenSSH_9.6\\r\\n')"
    )


# --- cli --------------------------------------------------------------------------------------

DAEMON = DaemonStatus("1.76.6-t1234abcd-g5678ef90", "Running", "PC", "pc.ts.net.", (), "windows")
CLI_VERSION = CommandResult(0, "1.76.6\n  tailscale commit: 1234abcd\n  go version: go1.23.1\n")


def cli_context(answer: CommandResult | None, os_release: str = UBUNTU) -> WslContext:
    def run(argv: object) -> CommandResult | None:
        assert argv == ["/usr/bin/tailscale", "version"]
        return answer

    return context(which=lambda name: f"/usr/bin/{name}", run=run, files={OS_RELEASE: os_release})


async def test_cli_missing() -> None:
    verdict = await check_cli(context())
    assert verdict.status is Status.FAILURE
    assert verdict.finding == "no `tailscale` CLI on PATH"
    assert verdict.fix is not None
    assert "curl -fsSL https://tailscale.com/install.sh | sh" in verdict.fix
    assert "sudo systemctl disable --now tailscaled" in verdict.fix


async def test_cli_same_release_as_the_daemon() -> None:
    ctx = cli_context(CLI_VERSION)
    ctx.found.daemon = DAEMON
    verdict = await check_cli(ctx)
    assert verdict == Verdict(
        Status.OK, "tailscale 1.76.6 at /usr/bin/tailscale, the Windows daemon's release"
    )


@pytest.mark.parametrize(
    ("os_release", "command"),
    [
        (UBUNTU, "sudo apt-get install --allow-downgrades tailscale=1.76.6"),
        ('ID="fedora"\n', "sudo dnf install tailscale-1.76.6"),
        ("ID=arch\n", "download tailscale_1.76.6_amd64.tgz from https://pkgs.tailscale.com"),
    ],
)
async def test_cli_other_release_names_both_and_the_install_command(
    os_release: str, command: str
) -> None:
    ctx = cli_context(CommandResult(0, "1.70.0\n"), os_release)
    ctx.found.daemon = DAEMON
    verdict = await check_cli(ctx)
    assert verdict.status is Status.WARNING
    assert verdict.finding == "the CLI is 1.70.0, the Windows daemon 1.76.6-t1234abcd-g5678ef90"
    assert verdict.fix is not None
    assert verdict.fix.startswith(f"install the matching CLI: `{command}")


async def test_cli_without_a_daemon_to_compare() -> None:
    verdict = await check_cli(cli_context(CLI_VERSION))
    assert verdict.status is Status.OK
    assert verdict.details == (
        "not compared with the Windows daemon's version: the LocalAPI did not answer",
    )


@pytest.mark.parametrize("answer", [None, CommandResult(1, "segfault\n")])
async def test_cli_that_does_not_answer(answer: CommandResult | None) -> None:
    verdict = await check_cli(cli_context(answer))
    assert verdict.status is Status.WARNING
    assert verdict.finding == "`/usr/bin/tailscale version` gave no version"


# --- end-to-end -------------------------------------------------------------------------------


async def test_end_to_end_gets_a_status(tmp_path: Path) -> None:
    ctx = socket_context(tmp_path)
    async with unix_server(ctx.options.socket, answering(status_answer())):
        verdict = await check_end_to_end(ctx)
    assert verdict.status is Status.OK
    # What was asked, not that `tailscale status` ran: the CLI may be missing (the cli check).
    assert verdict.finding.startswith(
        "GET /localapi/v0/status (what `tailscale status` asks) answered through "
        f"{ctx.options.socket}: Tailscale 1.76.6"
    )


async def test_end_to_end_failure(tmp_path: Path) -> None:
    ctx = socket_context(tmp_path)
    async with unix_server(ctx.options.socket, answering(plain_answer("403 Forbidden", "no"))):
        verdict = await check_end_to_end(ctx)
    assert verdict.status is Status.FAILURE
    assert verdict.finding == f"{ctx.options.socket} answered HTTP 403: 'no'"


async def test_end_to_end_connection_refused(tmp_path: Path) -> None:
    ctx = socket_context(tmp_path)
    leave_stale_socket(ctx.options.socket)
    verdict = await check_end_to_end(ctx)
    assert verdict.status is Status.FAILURE
    assert verdict.finding.endswith(": connection refused")


# --- the whole list ---------------------------------------------------------------------------


async def test_everything_down_outside_wsl(tmp_path: Path) -> None:
    options = Options(socket=tmp_path / "s.sock")
    ctx = context(options, side=Side.LINUX, find_key_file=lambda: tmp_path / "none.key")
    results = await run_checks(WSL_CHECKS, ctx)
    assert [(r.check_id, r.verdict.status.value) for r in results] == [
        ("platform", "warning"),
        ("host-address", "failure"),
        ("link-key", "failure"),
        ("windows-half", "skipped"),
        ("localapi", "skipped"),
        ("socket", "failure"),
        ("cli", "failure"),
        ("up-defaults", "skipped"),
        ("end-to-end", "skipped"),
    ]
    assert results[4].verdict.finding == "needs windows-half (skipped), link-key (failure)"


# --- up-defaults ------------------------------------------------------------------------------


async def test_up_defaults_for_linux_are_a_warning_with_both_ways_out() -> None:
    verdict = await check_up_defaults(context())
    assert verdict.status is Status.WARNING
    assert verdict.finding == (
        "`tailscale up` here computes its flag defaults for Linux, not for the Windows daemon it "
        "talks to: it may ask for flags again, or reset Windows' preferences"
    )
    assert verdict.fix == (
        "change single settings with `tailscale set` (e.g. `tailscale set --accept-routes`), or "
        "make `tailscale up` use Windows' defaults: "
        "echo 'export TS_DEBUG_UP_FLAG_GOOS=windows' >> ~/.bashrc"
    )


async def test_up_defaults_for_windows_are_fine() -> None:
    verdict = await check_up_defaults(context(environ={"TS_DEBUG_UP_FLAG_GOOS": "windows"}))
    assert verdict == Verdict(
        Status.OK, "`tailscale up` uses Windows' flag defaults here (TS_DEBUG_UP_FLAG_GOOS=windows)"
    )
    other = await check_up_defaults(context(environ={"TS_DEBUG_UP_FLAG_GOOS": "linux"}))
    assert other.status is Status.WARNING
    assert "(TS_DEBUG_UP_FLAG_GOOS=linux)" in other.finding
