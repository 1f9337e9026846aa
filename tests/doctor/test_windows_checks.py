"""Every Windows check in every outcome, run on Linux with real Windows output as samples."""

from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from ipaddress import IPv4Network
from pathlib import Path

import pytest
import trio

from tailscale_wsl2.doctor.model import Status, Verdict
from tailscale_wsl2.doctor.system import Connect
from tailscale_wsl2.doctor.windows_checks import (
    WindowsContext,
    WindowsSystem,
    check_firewall,
    check_link_key,
    check_listen_port,
    check_localapi,
    check_platform,
    check_tailscale_service,
    check_wsl_adapter,
)
from tailscale_wsl2.net.connect import open_stream
from tailscale_wsl2.net.endpoints import Discovered, Endpoint, TcpEndpoint, UnixEndpoint
from tailscale_wsl2.plan.halves import Discoverers, Options
from tailscale_wsl2.system import CommandResult, RunCommand
from tailscale_wsl2.windows.firewall import RuleSpec, add_rule_argv, command_line
from tailscale_wsl2.windows.ipconfig import WslAdapter, find_wsl_adapter, parse_ipconfig
from tailscale_wsl2.windows.localapi import LEGACY_LOCALAPI, LOCALAPI_PIPE
from tailscale_wsl2.windows.tools import wslconfig_networking_mode
from tests.support.doctor_fakes import (
    KEY,
    answering,
    fixture,
    never,
    status_answer,
    tcp_server,
    unix_server,
)
from tests.support.netsh import rule_block

PROFILE = Path("/profiles/me")
ENVIRON = {"USERPROFILE": str(PROFILE), "SystemRoot": "/windows", "LOCALAPPDATA": "/appdata"}


def ipconfig_adapter(name: str) -> WslAdapter | None:
    return find_wsl_adapter(parse_ipconfig(fixture(f"ipconfig/{name}")))


def commands(answers: Mapping[str, str | None]) -> RunCommand:
    """A RunCommand answering by the program's name: text (exit 0), or None (cannot run)."""

    def run(argv: Sequence[str]) -> CommandResult | None:
        text = answers[argv[0]]
        return None if text is None else CommandResult(0, text)

    return run


def context(options: Options | None = None, **changes: object) -> WindowsContext:
    base = WindowsSystem(
        release="11",
        version="10.0.22631",
        environ=ENVIRON,
        path_exists=lambda path: False,
        run=commands({"wsl.exe": ""}),
        discoverers=Discoverers(lambda: ipconfig_adapter("english.txt"), never, never, never),
        connect=open_stream,
    )
    return WindowsContext(options or Options(), 2.0, replace(base, **changes))  # type: ignore[arg-type]


# --- platform ---------------------------------------------------------------------------------


async def test_platform_with_wsl_and_a_mirrored_wslconfig() -> None:
    mirrored = partial(wslconfig_networking_mode, fixture("windows/wslconfig-mirrored.txt"))
    discoverers = Discoverers(never, never, never, never, windows_networking_mode=mirrored)
    verdict = await check_platform(context(discoverers=discoverers))
    assert verdict == Verdict(
        Status.OK,
        "Windows 11 (10.0.22631), WSL installed, networking mirrored",
        None,
        ("WSL networking mode mirrored (.wslconfig [wsl2] networkingMode)",),
    )


async def test_platform_wsl_found_by_its_binary() -> None:
    ctx = context(
        run=commands({"wsl.exe": None}),
        path_exists=lambda p: p == Path("/windows/System32/wsl.exe"),
    )
    assert (await check_platform(ctx)).status is Status.OK


async def test_platform_without_wsl() -> None:
    verdict = await check_platform(context(run=commands({"wsl.exe": None})))
    assert verdict.status is Status.FAILURE
    assert verdict.finding == "Windows 11 (10.0.22631): WSL is not installed"
    assert verdict.fix is not None
    assert "`wsl --install`" in verdict.fix


# --- tailscale-service ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "status", "finding"),
    [
        ("sc-running.txt", Status.OK, "the Tailscale service is running"),
        ("sc-stopped.txt", Status.FAILURE, "the Tailscale service is stopped"),
        (
            "sc-not-installed.txt",
            Status.FAILURE,
            "Tailscale is not installed (no Tailscale service)",
        ),
        (
            "sc-start-pending.txt",
            Status.WARNING,
            "the Tailscale service is starting, stopping or paused",
        ),
    ],
)
async def test_tailscale_service(sample: str, status: Status, finding: str) -> None:
    ctx = context(run=commands({"sc": fixture(f"windows/{sample}")}))
    verdict = await check_tailscale_service(ctx)
    assert verdict.status is status
    assert verdict.finding.startswith(finding)
    assert (verdict.fix is None) == (status is Status.OK)


async def test_tailscale_service_when_sc_cannot_run() -> None:
    verdict = await check_tailscale_service(context(run=commands({"sc": None})))
    assert verdict.status is Status.WARNING


# --- localapi ---------------------------------------------------------------------------------


def reaching(served: Endpoint, socket: Path) -> object:
    """A connector on which only `served` answers (through a Unix socket standing in for it)."""

    async def connect(endpoint: Endpoint) -> trio.abc.Stream:
        if endpoint != served:
            raise FileNotFoundError(2, "No such file or directory")
        return await open_stream(UnixEndpoint(str(socket)))

    return connect


@pytest.mark.parametrize("served", [LOCALAPI_PIPE, LEGACY_LOCALAPI])
async def test_localapi_on_the_pipe_or_the_legacy_port(served: Endpoint, tmp_path: Path) -> None:
    socket = tmp_path / "localapi.sock"
    ctx = context(connect=reaching(served, socket))
    async with unix_server(socket, answering(status_answer())):
        verdict = await check_localapi(ctx)
    assert verdict.status is Status.OK
    assert verdict.details[-1] == f"asked Tailscale's LocalAPI at {served}"
    assert ctx.found.daemon is not None
    assert ctx.found.daemon.backend_state == "Running"


async def test_localapi_nowhere(tmp_path: Path) -> None:
    ctx = context(connect=reaching(TcpEndpoint("127.0.0.1", 1), tmp_path / "none.sock"))
    verdict = await check_localapi(ctx)
    assert verdict.status is Status.FAILURE
    assert verdict.finding == (
        f"Tailscale's LocalAPI answers nowhere: {LOCALAPI_PIPE}: no such socket or pipe; "
        f"{LEGACY_LOCALAPI}: no such socket or pipe"
    )


async def test_localapi_in_use_by_another_user(tmp_path: Path) -> None:
    socket = tmp_path / "localapi.sock"
    busy = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 52\r\n\r\n"
    busy += b"Tailscale already in use by DESKTOP\\alice, pid 4321\n"
    ctx = context(Options(upstream=UnixEndpoint(str(socket))))
    async with unix_server(socket, answering(busy)):
        verdict = await check_localapi(ctx)
    assert verdict.status is Status.FAILURE
    assert verdict.finding == (
        f"Tailscale's LocalAPI at {socket} answered HTTP 401: "
        "'Tailscale already in use by DESKTOP\\\\alice, pid 4321'"
    )


# --- wsl-adapter ------------------------------------------------------------------------------


async def test_wsl_adapter_found() -> None:
    ctx = context()
    verdict = await check_wsl_adapter(ctx)
    assert verdict == Verdict(
        Status.OK,
        "the Windows half listens on 172.27.64.1:41113 for 172.27.64.0/20",
        None,
        ("address found by: vEthernet (WSL) adapter in ipconfig output",),
    )
    assert ctx.wsl_subnet() == IPv4Network("172.27.64.0/20")


async def test_wsl_adapter_missing() -> None:
    ctx = context(
        discoverers=Discoverers(lambda: ipconfig_adapter("english-no-wsl.txt"), never, never, never)
    )
    verdict = await check_wsl_adapter(ctx)
    assert verdict.status is Status.FAILURE
    assert verdict.finding.startswith("no vEthernet (WSL) adapter")
    assert verdict.fix is not None
    assert "wsl true" in verdict.fix


async def test_wsl_adapter_listen_on_loopback_needs_no_adapter() -> None:
    ctx = context(Options(listen="127.0.0.1"), discoverers=Discoverers(never, never, never, never))
    verdict = await check_wsl_adapter(ctx)
    assert verdict.finding == "the Windows half listens on 127.0.0.1:41113 for 127.0.0.0/8"
    assert ctx.wsl_subnet() is None


async def test_wsl_adapter_listen_outside_the_wsl_subnet() -> None:
    verdict = await check_wsl_adapter(context(Options(listen="192.168.178.42")))
    assert verdict.status is Status.FAILURE
    assert verdict.finding == (
        "--listen 192.168.178.42 is not on the WSL adapter's subnet 172.27.64.0/20"
    )


# --- link-key ---------------------------------------------------------------------------------


async def test_link_key_present(tmp_path: Path) -> None:
    path = tmp_path / "link.key"
    path.write_text(KEY.hex())
    verdict = await check_link_key(context(Options(key_file=path), path_exists=Path.exists))
    assert verdict == Verdict(Status.OK, f"the link key is at {path}")


async def test_link_key_not_made_yet_is_a_warning() -> None:
    verdict = await check_link_key(context())
    assert verdict.status is Status.WARNING
    assert verdict.finding == "no link key at /appdata/tailscale-wsl2/link.key yet"
    assert verdict.fix == "start the Windows half: `tailscale-wsl2.exe up` (it creates one)"


async def test_link_key_damaged(tmp_path: Path) -> None:
    path = tmp_path / "link.key"
    path.write_text("not hex")
    verdict = await check_link_key(context(Options(key_file=path), path_exists=Path.exists))
    assert verdict.status is Status.FAILURE


async def test_link_key_without_localappdata() -> None:
    verdict = await check_link_key(context(environ={}))
    assert verdict.status is Status.FAILURE
    assert verdict.fix == "pass --key-file PATH"


async def test_link_key_insecure() -> None:
    verdict = await check_link_key(context(Options(insecure_no_auth=True)))
    assert verdict.status is Status.WARNING


# --- listen-port ------------------------------------------------------------------------------


async def refused(endpoint: Endpoint) -> trio.abc.Stream:
    raise ConnectionRefusedError(111, "Connection refused")


def port_context(
    tasklist: str, netstat: str = "netstat-ano.txt", connect: Connect = refused
) -> WindowsContext:
    answers = {
        "netstat": fixture(f"windows/{netstat}"),
        "tasklist": fixture(f"windows/{tasklist}"),
    }
    return context(run=commands(answers), connect=connect)


async def test_listen_port_held_by_this_tool() -> None:
    ctx = port_context("tasklist-tailscale-wsl2.txt", connect=never)  # its name suffices
    await check_wsl_adapter(ctx)
    verdict = await check_listen_port(ctx)
    assert verdict == Verdict(
        Status.OK, "tailscale-wsl2.exe (pid 8124) listens on 172.27.64.1:41113"
    )


async def test_listen_port_held_by_another_program() -> None:
    verdict = await check_listen_port(
        port_context("tasklist-svchost.txt", "netstat-ano-german.txt")
    )
    assert verdict.status is Status.FAILURE
    assert verdict.finding == (
        "port 41113 is held by svchost.exe (pid 8124), not a Windows half of tailscale-wsl2: "
        "it cannot be asked (connection refused)"
    )
    assert verdict.fix == ("stop it: `taskkill /PID 8124`, or run both halves with another --port")


async def test_listen_port_held_by_a_process_that_is_gone() -> None:
    verdict = await check_listen_port(port_context("tasklist-none.txt"))
    assert verdict.finding.startswith("port 41113 is held by an unknown program (pid 8124), not")


def answered_at(port: int, seen: list[Endpoint]) -> Connect:
    """A connect that reaches the local test server on `port`, whatever the address asked."""

    async def connect(endpoint: Endpoint) -> trio.abc.Stream:
        seen.append(endpoint)
        return await open_stream(TcpEndpoint("127.0.0.1", port))

    return connect


async def test_listen_port_held_by_a_windows_half_under_another_name() -> None:
    # `python -m tailscale_wsl2 up` shows as python.exe; its hello says what it is.
    seen: list[Endpoint] = []
    async with tcp_server(answering(status_answer(), KEY)) as port:
        ctx = port_context("tasklist-python.txt", connect=answered_at(port, seen))
        await check_wsl_adapter(ctx)
        verdict = await check_listen_port(ctx)
    assert verdict == Verdict(Status.OK, "python.exe (pid 8124) listens on 172.27.64.1:41113")
    assert seen == [TcpEndpoint("172.27.64.1", 41113)]


async def test_listen_port_held_by_a_web_server_says_what_it_is() -> None:
    answer = b"HTTP/1.1 200 OK\r\nServer: Microsoft-IIS/10.0\r\n\r\nhello"
    async with tcp_server(answering(answer)) as port:
        ctx = port_context("tasklist-svchost.txt", connect=answered_at(port, []))
        ctx.timeout = 0.3
        verdict = await check_listen_port(ctx)
    assert verdict.finding == (
        "port 41113 is held by svchost.exe (pid 8124), not a Windows half of tailscale-wsl2: "
        "it answers HTTP (HTTP/1.1 200 OK, Server: Microsoft-IIS/10.0)"
    )


async def test_listen_port_free() -> None:
    ctx = port_context("tasklist-none.txt")
    verdict = await check_listen_port(WindowsContext(Options(port=41199), 2.0, ctx.system))
    assert verdict == Verdict(
        Status.WARNING,
        "nothing listens on port 41199",
        "start the Windows half: `tailscale-wsl2.exe up --port 41199`",
    )


async def test_listen_port_on_an_old_adapter_address() -> None:
    ctx = port_context("tasklist-tailscale-wsl2.txt")
    moved = WslAdapter(Discovered("172.22.16.1", "ipconfig"), IPv4Network("172.22.16.0/20"))
    ctx.system = replace(ctx.system, discoverers=Discoverers(lambda: moved, never, never, never))
    await check_wsl_adapter(ctx)
    verdict = await check_listen_port(ctx)
    assert verdict.status is Status.WARNING
    assert verdict.finding == (
        "tailscale-wsl2 listens on 172.27.64.1:41113, but the WSL adapter is now at "
        "172.22.16.1:41113"
    )


async def test_listen_port_without_netstat() -> None:
    verdict = await check_listen_port(context(run=commands({"netstat": None})))
    assert verdict.status is Status.WARNING


# --- firewall ---------------------------------------------------------------------------------


async def firewall(rules: str | None, options: Options | None = None) -> Verdict:
    ctx = context(options, run=commands({"netsh": rules}))
    await check_wsl_adapter(ctx)
    return await check_firewall(ctx)


async def test_firewall_allows_the_wsl_subnet() -> None:
    verdict = await firewall(fixture("windows/netsh-rules.txt") + rule_block())
    assert verdict == Verdict(
        Status.OK, "the firewall rule 'tailscale-wsl2' allows TCP 41113 from 172.27.64.0/20"
    )


async def test_firewall_without_a_rule_gives_the_scoped_command() -> None:
    verdict = await firewall(fixture("windows/netsh-rules.txt"))
    assert verdict.status is Status.FAILURE
    assert verdict.finding == "no firewall rule allows TCP 41113 from 172.27.64.0/20"
    # Exactly the rule `firewall add` makes (from source: for any program).
    assert verdict.fix == (
        "run `tailscale-wsl2.exe firewall add --subnet 172.27.64.0/20` (it asks for elevation "
        "once), or in an elevated PowerShell: netsh advfirewall firewall add rule "
        "name=tailscale-wsl2 dir=in action=allow protocol=TCP localport=41113 "
        "remoteip=172.27.64.0/20 profile=any edge=no enable=yes"
    )
    spec = RuleSpec(41113, IPv4Network("172.27.64.0/20"), None)
    assert verdict.fix.endswith(command_line(add_rule_argv(spec)))


async def test_firewall_block_rule_wins() -> None:
    block = rule_block(**{"Rule Name": "Block WSL", "RemoteIP": "Any", "Action": "Block"})
    verdict = await firewall(rule_block() + block)
    assert verdict.status is Status.FAILURE
    assert verdict.finding == "the firewall rule 'Block WSL' blocks TCP 41113 from 172.27.64.0/20"


@pytest.mark.parametrize(
    "output", [None, "Keine Regeln entsprechen den angegebenen Kriterien.\r\n"]
)
async def test_firewall_rules_unreadable(output: str | None) -> None:
    verdict = await firewall(output)
    assert verdict.status is Status.WARNING
    assert verdict.fix is not None
    assert "remoteip=172.27.64.0/20" in verdict.fix


async def test_firewall_not_needed_on_loopback() -> None:
    verdict = await firewall(None, Options(listen="127.0.0.1"))
    assert verdict == Verdict(Status.OK, "not needed: the Windows half listens on loopback")
