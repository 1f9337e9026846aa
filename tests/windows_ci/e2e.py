"""End-to-end test of the built Windows .exe on a real Windows machine (the CI's windows-latest
runner, which runs as an administrator): what Wine cannot show.

Run from the repository root, after `pip install -e .[dev]` and building the .exe:

    python -m tests.windows_ci.e2e dist\\tailscale-wsl2.exe

Each step prints what it saw, so the job's log is the record; any failed expectation ends
the run with status 1. The steps:

1. the .exe's version information and manifest (read back with PyInstaller's readers);
2. a LocalAPI stand-in on tailscaled's own pipe name (under ProtectedPrefix\\Administrators,
   which only an administrator may create) with tailscaled's security descriptor, reading
   each client's identity as tailscaled does; the .exe's Windows half with `--upstream auto`
   relays a request to it over TCP, and the pipe server sees the .exe's process at the
   Identification level, as the same user;
3. with the pipe gone (Tailscale "stopped"), how long the 502 takes: both places fail at once
   (the pipe is missing; the legacy port 127.0.0.1:41112 is refused with no SYN retries);
   also the product's connect against a plain socket's, to a closed loopback port;
4. the firewall for real: `firewall add`, `show` (parsed), `remove`, the profile settings
   and the rule listing parsed as `up` and doctor parse them, and the removal of a Block rule
   like the first-listen prompt's, which must leave an Allow rule of the same name alone;
5. the link key's ACL, made by `up --key-file`, read back with `icacls /save`: inheritance
   off, one entry, full control for this user's SID;
6. the logon task of `install`: `install --dry-run` (shows the task, changes nothing), then
   `install --listen 127.0.0.1` on a free port (loopback: no firewall rule, so no UAC prompt),
   the task read back with `schtasks /Query /XML` and checked field by field (tests/windows_ci/
   task.py), `status --json` saying the installed copy runs, then `uninstall`, after which the
   task and the copy are gone. The task's logon type is InteractiveToken (it runs only while
   the user is logged on, in that session); on a runner whose job runs in session 0 (no
   interactive logon) Task Scheduler does not start such a task, so there, and only there, a
   copy that never starts is reported and not counted as a failure (docs/release.md).

Windows only; it changes the machine's firewall (and undoes it), so it is no unit test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path, PureWindowsPath

import trio
from PyInstaller.utils.win32 import versioninfo, winmanifest

from tailscale_wsl2 import __version__
from tailscale_wsl2.facts import LEGACY_LOCALAPI_PORT, LOCALAPI_PIPE_NAME
from tailscale_wsl2.install.paths import windows_paths
from tailscale_wsl2.install.windows_task import (
    parse_task_status,
    parse_task_xml,
    query_task_status_argv,
    query_task_xml_argv,
    windows_user_id,
)
from tailscale_wsl2.link.key import current_user_sid
from tailscale_wsl2.net.sockets import connect_socket
from tailscale_wsl2.system import run_command
from tailscale_wsl2.windows.firewall import (
    SHOW_PROFILES,
    SHOW_RULES,
    remove_blocking_argv,
)
from tailscale_wsl2.windows.firewall_rules import parse_firewall_rules, parse_public_profile
from tests.in_wine.pipe_server import (
    TAILSCALED_SDDL,
    ClientIdentity,
    ImpersonationLevel,
    NamedPipeListener,
    identified,
)
from tests.support.localapi_standin import handle_quietly
from tests.windows_ci.acl import dacl_entries
from tests.windows_ci.task import running_half, task_checks

# The Windows-only imports above (pipe_server first) raise ImportError anywhere else, and mypy
# checks this module with --platform win32.
assert sys.platform == "win32"

__all__ = ["main"]


class Failed(Exception):
    """A failed expectation; main() turns it into exit status 1."""


def expect(condition: bool, what: str) -> None:
    print(("ok:     " if condition else "FAILED: ") + what, flush=True)
    if not condition:
        raise Failed(what)


SYSTEM32 = Path(os.environ.get("SYSTEMROOT", r"C:\Windows"), "System32")


def run(argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    print("$ " + subprocess.list2cmdline(argv), flush=True)
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    output = (done.stdout + done.stderr).strip()
    if output:
        print(output, flush=True)
    return done


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --- 1. version information and manifest --------------------------------------------------


def check_resources(exe: Path) -> None:
    info = versioninfo.read_version_info_from_executable(str(exe))
    expect(info is not None, "the .exe carries version information")
    [string_file_info, *_] = info.kids
    [table] = string_file_info.kids
    strings = {struct.name: struct.val for struct in table.kids}
    print(strings)
    expect(strings.get("ProductVersion") == __version__, f"ProductVersion is {__version__}")
    manifest = winmanifest.read_manifest_from_executable(str(exe))
    text = manifest.decode("utf-8", "replace") if manifest else ""
    expect('level="asInvoker"' in text, "the manifest runs it asInvoker")


# --- 2 and 3. the relay to a tailscaled-like pipe, and the time a refusal takes ----------


async def wait_for_port(port: int, process: trio.Process) -> None:
    with trio.fail_after(60):
        while True:
            if process.returncode is not None:
                raise Failed(f"the Windows half exited with status {process.returncode}")
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.2)
                continue
            await stream.aclose()
            return


async def http_status(port: int) -> bytes:
    request = (
        b"GET /localapi/v0/status HTTP/1.1\r\nHost: local-tailscaled.sock\r\n"
        b"Connection: close\r\n\r\n"
    )
    with trio.fail_after(30):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(request)
            answer = b""
            while chunk := await stream.receive_some():
                answer += chunk
    return answer


def stop(process: trio.Process) -> None:
    # /T: the one-file .exe's bootloader runs the program as a child process.
    run([str(SYSTEM32 / "taskkill.exe"), "/PID", str(process.pid), "/T", "/F"])


async def one_request_through_the_pipe(port: int, process: trio.Process) -> None:
    seen: list[ClientIdentity] = []

    async def answer(stream: trio.abc.Stream, identity: ClientIdentity) -> None:
        seen.append(identity)
        await handle_quietly(stream)

    async with trio.open_nursery() as nursery:
        listener = NamedPipeListener(LOCALAPI_PIPE_NAME, sddl=TAILSCALED_SDDL)
        print(f"serving a LocalAPI stand-in on {LOCALAPI_PIPE_NAME}", flush=True)
        nursery.start_soon(trio.serve_listeners, identified(answer), [listener])
        await wait_for_port(port, process)
        reply = await http_status(port)
        nursery.cancel_scope.cancel()  # Tailscale "stops": its pipe goes
    print(reply[:400].decode("utf-8", "replace"))
    expect(reply.startswith(b"HTTP/1.1 200"), "the request got the daemon's answer")
    expect(b"Tailscale-Version:" in reply, "...with its Tailscale-Version header")
    expect(len(seen) == 1, "the pipe server identified one client")
    print(seen[0])
    expect(seen[0].level is ImpersonationLevel.IDENTIFICATION, "at the Identification level")
    expect(seen[0].user_sid == current_user_sid(), "the client is this user")
    expect(seen[0].pid != os.getpid(), "the client is the .exe's process")


async def relay_through_the_pipe(exe: Path) -> None:
    port = free_port()
    argv = [str(exe), "up", "--side", "windows", "--listen", "127.0.0.1", "--port", str(port)]
    argv.append("--insecure-no-auth")  # the link itself is tested under Wine and on Linux
    process = await trio.lowlevel.open_process(argv)
    try:
        await one_request_through_the_pipe(port, process)
        await refusal_is_quick(port)
    finally:
        stop(process)


async def refusal_is_quick(port: int) -> None:
    started = time.monotonic()
    reply = await http_status(port)
    took = time.monotonic() - started
    print(reply.decode("utf-8", "replace"))
    print(f"502 with Tailscale stopped after {took:.3f} s", flush=True)
    expect(reply.startswith(b"HTTP/1.1 502"), "Tailscale stopped: a 502")
    expect(b"Tailscale is not running on Windows" in reply, "...naming the cause")
    expect(took < 1.0, "...at once, not after Windows' 2 s of SYN retries")
    closed = ("127.0.0.1", LEGACY_LOCALAPI_PORT)
    started = time.monotonic()
    try:
        await connect_socket(socket.AF_INET, closed, timeout=10)
    except ConnectionRefusedError:
        pass
    product = time.monotonic() - started
    started = time.monotonic()
    with socket.socket() as plain:
        refused = plain.connect_ex(closed)
    baseline = time.monotonic() - started
    print(
        f"refused connect to {closed[0]}:{closed[1]}: {product:.3f} s with "
        f"SIO_TCP_INITIAL_RTO, {baseline:.3f} s without (error {refused})",
        flush=True,
    )
    expect(product < 1.0, "the product's loopback connect is refused at once")


# --- 4. the firewall ------------------------------------------------------------------------


def check_firewall(exe: Path) -> None:
    profiles = run(SHOW_PROFILES)
    public = parse_public_profile(profiles.stdout)
    print(f"Public profile as read: {public}")
    expect(public is not None, "`netsh advfirewall monitor show firewall` parses")
    listing = run(SHOW_RULES, timeout=300)
    rules = parse_firewall_rules(listing.stdout)
    print(f"{len(rules)} inbound rules parsed")
    expect(len(rules) > 0, "the rule listing parses")

    port, subnet = free_port(), "172.27.64.0/20"
    added = run([str(exe), "firewall", "add", "--port", str(port), "--subnet", subnet])
    expect(added.returncode == 0, "firewall add succeeds")
    shown = run([str(exe), "firewall", "show"])
    [rule] = [r for r in parse_firewall_rules(shown.stdout) if r.name == "tailscale-wsl2"]
    expect(rule.local_port == str(port), "the rule's port is read back")
    expect(rule.remote_ip == "172.27.64.0/255.255.240.0", "...its remote subnet")
    expect(rule.action == "Allow" and rule.direction == "In", "...inbound Allow")
    expect(Path(rule.program).samefile(exe), "...for this .exe")
    removed = run([str(exe), "firewall", "remove"])
    expect(removed.returncode == 0, "firewall remove succeeds")
    gone = run([str(exe), "firewall", "show"])
    expect("no firewall rule 'tailscale-wsl2'" in gone.stdout, "the rule is gone")
    check_prompt_rule_removal(exe)


def netsh_rule(*words: str) -> subprocess.CompletedProcess[str]:
    return run(["netsh", "advfirewall", "firewall", *words])


def check_prompt_rule_removal(exe: Path) -> None:
    # What Windows' first-listen prompt leaves when answered for Private networks only:
    # an Allow rule for Private and a Block rule for Public, with one name, for the program.
    name = "tailscale-wsl2 e2e prompt rule"
    for action, profile in (("allow", "private"), ("block", "public")):
        netsh_rule(
            "add", "rule", f"name={name}", "dir=in", f"action={action}",
            f"profile={profile}", "protocol=TCP", f"program={exe}",
        )  # fmt: skip
    shown = ["show", "rule", f"name={name}", "verbose"]
    print([(r.action, r.profiles) for r in parse_firewall_rules(netsh_rule(*shown).stdout)])
    try:
        done = run(remove_blocking_argv([str(exe)], os.environ))
        expect(done.returncode == 0, "the PowerShell removal runs")
        after = parse_firewall_rules(netsh_rule(*shown).stdout)
        print([(r.action, r.profiles) for r in after])
        expect([r.action for r in after] == ["Allow"], "the Block rule alone is gone")
    finally:
        netsh_rule("delete", "rule", f"name={name}")


# --- 5. the link key's ACL ------------------------------------------------------------------


async def check_key_acl(exe: Path, workdir: Path) -> None:
    key = workdir / "tailscale-wsl2" / "link.key"
    port = free_port()
    argv = [str(exe), "up", "--side", "windows", "--listen", "127.0.0.1", "--port", str(port)]
    process = await trio.lowlevel.open_process([*argv, "--key-file", str(key)])
    try:
        await wait_for_port(port, process)
    finally:
        stop(process)
    expect(key.exists(), "up made the link key")
    leftovers = [p.name for p in key.parent.iterdir() if p.name != key.name]
    expect(leftovers == [], "no temporary key file is left")
    run([str(SYSTEM32 / "icacls.exe"), str(key)])
    saved = workdir / "acl.txt"
    run([str(SYSTEM32 / "icacls.exe"), str(key), "/save", str(saved), "/q"])
    sddl = saved.read_text(encoding="utf-16").splitlines()[1]
    print(sddl)
    flags, aces = dacl_entries(sddl)
    expect("P" in flags, "the key's ACL inherits nothing")
    expect(aces == [("A", "FA", current_user_sid())], "full control for this user alone")


# --- 6. the logon task of `install` ---------------------------------------------------------

# How long the task gets to start the installed copy and for it to report itself running.
TASK_START_SECONDS = 60.0


def query_task() -> str | None:
    """The registered task's XML, read as install reads it (`run_command`); None: no task."""
    argv = query_task_xml_argv(os.environ)
    print("$ " + subprocess.list2cmdline(argv), flush=True)
    answer = run_command(argv)
    if answer is None or answer.returncode != 0:
        print(answer.output.strip() if answer else "(could not run schtasks)", flush=True)
        return None
    print(answer.output.strip(), flush=True)
    return answer.output


def session_id() -> int:
    """This process's Terminal Services session; 0 is the services' session (no logon)."""
    import ctypes  # noqa: PLC0415
    from ctypes import wintypes  # noqa: PLC0415

    found = wintypes.DWORD()
    kernel32 = ctypes.windll.kernel32
    if not kernel32.ProcessIdToSessionId(kernel32.GetCurrentProcessId(), ctypes.byref(found)):
        return -1
    return found.value


def wait_until_running(exe: Path) -> dict[str, object] | None:
    deadline = time.monotonic() + TASK_START_SECONDS
    while True:
        # Exit status 1 here: the copy runs, but no Tailscale on the runner answers it.
        running = running_half(run([str(exe), "status", "--json"]).stdout)
        if running is not None or time.monotonic() > deadline:
            return running
        time.sleep(2)


def check_task_runs(exe: Path, installed: str, port: int) -> None:
    running = wait_until_running(exe)
    if running is None:
        print(parse_task_status(run(query_task_status_argv(os.environ)).stdout), flush=True)
        session = session_id()
        if session == 0:
            print(
                "not asserted: this job runs in session 0, with no interactive logon, and "
                "Task Scheduler starts an InteractiveToken task only in a logged-on session",
                flush=True,
            )
            return
        print(f"this job runs in session {session}", flush=True)
    expect(running is not None, f"status --json: running within {TASK_START_SECONDS:.0f} s")
    assert running is not None
    executable = str(running.get("executable"))
    expect(PureWindowsPath(executable) == PureWindowsPath(installed), "...as the installed copy")
    arguments = running.get("arguments")
    expect(isinstance(arguments, list) and str(port) in arguments, "...on the port given")


def check_logon_task(exe: Path) -> None:
    port = free_port()
    options = ["--listen", "127.0.0.1", "--port", str(port)]
    installed = windows_paths(os.environ).exe
    dry = run([str(exe), "install", "--dry-run", *options])
    expect(dry.returncode == 0, "install --dry-run succeeds")
    expect("schtasks.exe /Create /TN tailscale-wsl2 /XML" in dry.stdout, "...shows the task")
    expect("<LogonTrigger>" in dry.stdout, "...with its whole definition")
    expect("run elevated" not in dry.stdout, "...and no firewall step for loopback")
    expect(query_task() is None, "...and registers nothing")
    try:
        done = run([str(exe), "install", *options])
        expect(done.returncode == 0, "install succeeds")
        document = query_task()
        expect(document is not None, "schtasks /Query /XML finds the task")
        assert document is not None
        fields = parse_task_xml(document)
        users = {windows_user_id(os.environ), current_user_sid()}
        for holds, what in task_checks(
            fields, command=installed, arguments=["up", *options], user_ids=users
        ):
            expect(holds, what)
        check_task_runs(exe, installed, port)
    finally:
        undone = run([str(exe), "uninstall"])
    expect(undone.returncode == 0, "uninstall succeeds")
    expect(query_task() is None, "the task is gone")
    expect(not Path(installed).exists(), "the installed copy is gone")


# --- the run ----------------------------------------------------------------------------


def steps(exe: Path, workdir: Path) -> list[tuple[str, Callable[[], object]]]:
    return [
        ("version information and manifest", partial(check_resources, exe)),
        ("relay to a tailscaled-like pipe", partial(trio.run, relay_through_the_pipe, exe)),
        ("the firewall, for real", partial(check_firewall, exe)),
        ("the link key's ACL", partial(trio.run, check_key_acl, exe, workdir)),
        ("the logon task of `install`", partial(check_logon_task, exe)),
    ]


def main() -> int:
    if len(sys.argv) != 2:
        raise SystemExit(r"usage: python -m tests.windows_ci.e2e dist\tailscale-wsl2.exe")
    exe = Path(sys.argv[1]).resolve()
    failures = []
    with tempfile.TemporaryDirectory() as workdir:
        for title, step in steps(exe, Path(workdir)):
            print(f"\n== {title}", flush=True)
            try:
                step()
            except Failed as exc:
                failures.append(f"{title}: {exc}")
    print("\n" + ("\n".join(failures) if failures else "all steps passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
