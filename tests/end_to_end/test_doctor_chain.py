"""`doctor` as users run it, against the loopback chain: all green, then one hop broken at a
time. Runs with the package and with the frozen binary (the `program` fixture).

Every fix that prints a start command is run here as printed (`printed_commands.py`), and the
chain is seen to work after it: a fix is right only when copying it works."""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tailscale_wsl2.cli.app import app
from tailscale_wsl2.doctor import command
from tailscale_wsl2.wsl.side import Side, read_side
from tests.support.chain import (
    FROZEN_BINARY,
    Chain,
    connectable,
    running_chain,
    start_process,
    wait_for_process,
)
from tests.support.ci import require
from tests.support.http_client import request
from tests.support.printed_commands import (
    as_run_here,
    commands_in,
    printed_key_file,
    start_printed,
    the_command,
)

NOBODY = 65534
# A user outside the socket's group, as most WSL2 users are: runs a command as `nobody`.
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
# Outside WSL (this test's usual home) the platform check can only warn.
PLATFORM = "ok" if read_side() in (Side.WSL2, Side.WSL1) else "warning"
# Greets like a mail server after each request; its command line names no known program.
FOREIGN_LISTENER = (
    "import socket, sys\n"
    "server = socket.socket(socket.AF_UNIX)\n"
    "server.bind(sys.argv[1])\n"
    "server.listen()\n"
    "while True:\n"
    "    client = server.accept()[0]\n"
    "    try:\n"
    "        if client.recv(65536):\n"
    "            client.sendall(b'220 mail.example ESMTP\\r\\n')\n"
    "    finally:\n"
    "        client.close()\n"
)


@pytest.fixture
def chain(program: list[str], tmp_path: Path) -> Iterator[Chain]:
    with running_chain(program, tmp_path) as chain:
        yield chain


def fake_tailscale_cli(directory: Path, version: str) -> None:
    directory.mkdir(exist_ok=True)
    cli = directory / "tailscale"
    cli.write_text(f"#!/bin/sh\necho {version}\necho '  tailscale commit: 1234abcd'\n")
    cli.chmod(0o755)


# As a user who followed doctor's advice for `tailscale up` (the up-defaults check).
ADVISED_SHELL = {"TS_DEBUG_UP_FLAG_GOOS": "windows"}


def doctor(
    chain: Chain, *extra: str, path: Path | None = None, as_nobody: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run doctor against `chain`; PATH holds `path` only, where given (for the CLI check)."""
    bin_dir = path or chain.workdir / "bin"
    argv = [
        *(AS_NOBODY if as_nobody else []),
        *(program_for_nobody(chain) if as_nobody else chain.program),
        "doctor",
        "--side",
        "wsl",
        "--host-ip",
        "127.0.0.1",
        "--port",
        str(chain.port),
        "--socket",
        str(chain.socket),
        "--key-file",
        str(chain.key_file),
        *extra,
    ]
    environ = {**os.environ, **ADVISED_SHELL, "PATH": f"{bin_dir}{os.pathsep}{os.defpath}"}
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=30, env=environ, check=False
    )


def checks(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    document = json.loads(done.stdout)
    assert document["side"] == "wsl"
    return {check["id"]: check for check in document["checks"]}


def statuses(found: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {check_id: check["status"] for check_id, check in found.items()}


ALL_GREEN = {
    "platform": PLATFORM,
    "host-address": "ok",
    "link-key": "ok",
    "windows-half": "ok",
    "localapi": "ok",
    "socket": "ok",
    "cli": "ok",
    "up-defaults": "ok",
    "end-to-end": "ok",
}


def test_all_green(chain: Chain) -> None:
    fake_tailscale_cli(chain.workdir / "bin", "1.76.6")
    done = doctor(chain, "--json")
    found = checks(done)
    assert statuses(found) == ALL_GREEN
    assert done.returncode == 0, done.stdout
    assert found["host-address"]["finding"] == (
        f"the Windows half is at 127.0.0.1:{chain.port} (--host-ip)"
    )
    assert found["localapi"]["finding"] == (
        "Tailscale 1.76.6-t1234abcd-g5678ef90 is Running as DESKTOP-WIN11 "
        "(desktop-win11.tail1234.ts.net.) 100.101.102.103, fd7a:115c:a1e0::1"
    )
    assert found["socket"]["finding"].startswith(f"tailscale-wsl2 answers on {chain.socket}")
    assert found["cli"]["finding"].endswith("the Windows daemon's release")
    assert found["end-to-end"]["fix"] is None


def test_human_output_and_a_missing_cli(chain: Chain) -> None:
    done = doctor(chain, path=chain.workdir / "empty")
    lines = done.stdout.splitlines()
    assert done.returncode == 1
    assert lines[0].startswith(("[✓] platform", "[!] platform"))
    assert f"[✓] windows-half  the Windows half at 127.0.0.1:{chain.port} accepted" in lines[4]
    assert "[✗] cli           no `tailscale` CLI on PATH" in lines
    # What doctor asked, not that `tailscale status` ran: there is no `tailscale` to run.
    assert lines[-2].startswith(
        "[✓] end-to-end    GET /localapi/v0/status (what `tailscale status` asks) answered "
        f"through {chain.socket}: Tailscale 1.76.6"
    )
    assert lines[-1].startswith("doctor: 1 failure")
    assert not any(line.startswith("    · ") for line in lines)  # details need -v
    verbose = doctor(chain, "-v", path=chain.workdir / "empty").stdout.splitlines()
    assert "    · systemd is PID 1" in verbose or any("PID 1 is" in line for line in verbose)


def test_windows_half_stopped(chain: Chain) -> None:
    fake_tailscale_cli(chain.workdir / "bin", "1.76.6")
    chain.stop("windows")
    found = checks(doctor(chain, "--json"))
    assert statuses(found) == {
        **ALL_GREEN,
        "windows-half": "failure",
        "localapi": "skipped",
        "end-to-end": "skipped",
    }
    assert found["windows-half"]["finding"] == (
        f"cannot connect to the Windows half at 127.0.0.1:{chain.port}: connection refused"
    )
    assert found["windows-half"]["fix"] == (
        "start the Windows half: run `tailscale-wsl2.exe up --side windows "
        f"--port {chain.port} --listen 127.0.0.1 --key-file {chain.key_file}` on Windows"
    )
    assert found["localapi"]["finding"] == "needs windows-half (failure)"
    assert found["end-to-end"]["finding"] == "needs localapi (skipped)"


def test_localapi_stopped(chain: Chain) -> None:
    fake_tailscale_cli(chain.workdir / "bin", "1.76.6")
    chain.stop("localapi")
    done = doctor(chain, "--json")
    found = checks(done)
    assert done.returncode == 1
    assert statuses(found) == {**ALL_GREEN, "localapi": "failure", "end-to-end": "skipped"}
    assert found["localapi"]["finding"] == (
        f"the Windows half at 127.0.0.1:{chain.port} answered HTTP 502: "
        f"\"Tailscale's LocalAPI on Windows is not reachable at {chain.localapi_socket} "
        "(connection refused); is Tailscale running on Windows? Start it, then run "
        f"`tailscale-wsl2.exe doctor --side windows --port {chain.port} --listen 127.0.0.1 "
        f'--upstream unix:{chain.localapi_socket} --key-file {chain.key_file}` on Windows"'
    )
    assert "`tailscale-wsl2.exe doctor`" in found["localapi"]["fix"]
    assert "not compared" in found["cli"]["details"][0]


def test_foreign_listener_on_the_socket(chain: Chain) -> None:
    fake_tailscale_cli(chain.workdir / "bin", "1.76.6")
    chain.stop("wsl")
    argv = [sys.executable, "-c", FOREIGN_LISTENER, str(chain.socket)]
    foreign = start_process(argv, chain.workdir / "foreign.log")
    chain.processes["foreign"] = foreign
    wait_for_process(
        lambda: connectable(socket.AF_UNIX, str(chain.socket)), foreign, "the foreign listener"
    )
    found = checks(doctor(chain, "--json"))
    assert statuses(found) == {**ALL_GREEN, "socket": "failure", "end-to-end": "skipped"}
    assert found["socket"]["finding"] == (
        f"another program answers on {chain.socket}: {' '.join(' '.join(argv).split())[:100]} "
        f"(pid {foreign.popen.pid}) (not an HTTP answer: b'220 mail.example ESMTP\\r\\n')"
    )
    assert found["socket"]["fix"].startswith("stop it, or run tailscale-wsl2 with another --socket")


def test_plain_linux_says_what_the_tool_is_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command, "read_side", lambda: Side.LINUX)
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "[✗] platform  this is neither Windows nor WSL: tailscale-wsl2 connects the `tailscale` "
        "CLI inside WSL2 to Tailscale on the Windows host",
        "    fix: run it on Windows and inside WSL2, or force a half with --side windows|wsl",
        "doctor: 1 failure (1 check)",
    ]
    as_json = json.loads(CliRunner().invoke(app, ["doctor", "--json"]).output)
    assert (as_json["side"], as_json["status"]) == ("linux", "failure")


def test_bad_upstream_is_one_line() -> None:
    result = CliRunner().invoke(app, ["doctor", "--side", "wsl", "--upstream", "nowhere"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "tailscale-wsl2: --upstream: expected tcp:HOST:PORT, unix:PATH or npipe:NAME, got 'nowhere'"
    ]


# --- the six answers of issue 18, each with its fix run as printed ------------------------------


def printed_doctor(chain: Chain, command: str) -> dict[str, dict[str, Any]]:
    """The checks of a doctor command as a fix printed it (with --json to read them)."""
    path = f"{chain.workdir / 'bin'}{os.pathsep}{os.defpath}"
    environ = {**os.environ, **ADVISED_SHELL, "PATH": path}
    argv = [*as_run_here(chain, command), "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, env=environ, check=False)
    return checks(done)


def all_green(chain: Chain) -> None:
    """Doctor finds nothing wrong: the chain works end to end."""
    found = checks(doctor(chain, "--json"))
    assert statuses(found) == ALL_GREEN, found


def status_through(chain: Chain) -> int:
    return request(chain.socket, "GET", "/localapi/v0/status").status


def new_key(path: Path) -> None:
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)


def program_for_nobody(chain: Chain) -> list[str]:
    """The program under test where `nobody` can run it. A checkout (and its venv) may sit
    where only its owner can enter (a clone under /root or a private temporary directory):
    then `nobody` runs a copy of the frozen binary, which needs nothing else, placed in the
    work directory that other users may enter."""
    probe = subprocess.run(
        [*AS_NOBODY, *chain.program, "--version"], capture_output=True, timeout=30, check=False
    )
    if probe.returncode == 0:
        return chain.program
    require(FROZEN_BINARY.exists(), f"no frozen binary at {FROZEN_BINARY}: run `make build`")
    copy = chain.workdir / "tailscale-wsl2-for-nobody"
    if not copy.exists():
        shutil.copy2(FROZEN_BINARY, copy)
        copy.chmod(0o755)
    return [str(copy)]


@pytest.fixture
def open_workdir() -> Iterator[Path]:
    """A work directory other users may enter (pytest's own are the runner's alone)."""
    workdir = Path(tempfile.mkdtemp(prefix="doctor-chain-"))
    workdir.chmod(0o755)
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_doctor_runs_for_a_user_who_may_read_neither_socket_nor_key(
    program: list[str], open_workdir: Path
) -> None:
    # Answer 1: typer refused the unreadable --socket before any check ran (exit 2).
    with running_chain(program, open_workdir) as chain:
        fake_tailscale_cli(chain.workdir / "bin", "1.76.6")
        chain.socket.chmod(0o660)
        as_nobody = os.geteuid() == 0
        if not as_nobody:  # the owner, shut out by the mode: the same refusal
            chain.socket.chmod(0o000)
            chain.key_file.chmod(0o000)
        done = doctor(chain, "--json", as_nobody=as_nobody)
        assert "Invalid value" not in done.stderr
        assert done.returncode == 1, done.stderr
        found = checks(done)
        assert found["link-key"]["finding"].startswith(
            f"no permission to read the link key at {chain.key_file} (mode 0"
        )
        assert found["socket"]["finding"].startswith(f"you may not connect to {chain.socket}")
        assert statuses(found)["windows-half"] == "ok"  # every check ran
        if not as_nobody:
            return
        # The key's fix: doctor as root, as printed, with the options given; all green then.
        rerun = the_command(found["link-key"]["fix"], "doctor")
        assert rerun.startswith("sudo tailscale-wsl2 doctor --side wsl ")
        assert statuses(printed_doctor(chain, rerun)) == ALL_GREEN
        # The socket's fix: the WSL2 half started with sudo from the user's own account (sudo
        # sets SUDO_GID), so the socket gets the user's group, and the user gets in.
        start = the_command(found["socket"]["fix"], "up")
        chain.stop("wsl")
        sudo_from_nobody = {**os.environ, "SUDO_UID": str(NOBODY), "SUDO_GID": str(NOBODY)}
        start_printed(chain, start, "wsl", env=sudo_from_nobody)
        socket_now = checks(doctor(chain, "--json", as_nobody=True))["socket"]
        assert socket_now["status"] == "ok", socket_now


def test_a_windows_half_run_with_insecure_no_auth_is_named_and_fixed(
    program: list[str], tmp_path: Path
) -> None:
    # Answer 2, one way round: the WSL2 half expects the handshake, the Windows half has none.
    chain = Chain(program, tmp_path)
    fake_tailscale_cli(chain.workdir / "bin", "1.76.6")
    try:
        new_key(chain.key_file)
        chain.start_localapi()
        chain.start_windows_half("--insecure-no-auth")
        chain.start_wsl_half()
        answer = request(chain.socket, "GET", "/localapi/v0/status")
        assert answer.status == 502
        line = answer.body.decode()
        # Named at once by its answer to the handshake (issue 16's NO_AUTH_HERE), where the
        # first link version's WSL2 half waited 5 s for a greeting that never came.
        assert "runs with --insecure-no-auth, and this half expects the link handshake" in line
        found = checks(doctor(chain, "--json"))
        assert found["windows-half"]["finding"] == (
            f"the Windows half at 127.0.0.1:{chain.port} runs with --insecure-no-auth, "
            "and this half expects the link handshake"
        )
        fixed = the_command(found["windows-half"]["fix"], "up")
        assert fixed == the_command(line, "up")  # the 502 and doctor name the same fix
        assert "--insecure-no-auth" not in fixed
        chain.stop("windows")
        start_printed(chain, fixed, "windows")
        assert status_through(chain) == 200
        all_green(chain)
    finally:
        chain.stop_all()


def test_a_wsl_half_run_with_insecure_no_auth_answers_502_not_garbage(
    program: list[str], tmp_path: Path
) -> None:
    # Answer 2, the other way round: curl got the handshake's bytes ("HTTP/0.9"), and doctor
    # blamed Tailscale ("Connection reset by peer").
    require(shutil.which("curl") is not None, "curl is not installed")
    chain = Chain(program, tmp_path)
    fake_tailscale_cli(chain.workdir / "bin", "1.76.6")
    try:
        chain.start_localapi()
        chain.start_windows_half()
        chain.start_wsl_half("--insecure-no-auth")
        url = "http://local-tailscaled.sock/localapi/v0/status"
        curl = subprocess.run(
            ["curl", "-sS", "-i", "--unix-socket", str(chain.socket), url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert curl.returncode == 0, curl.stderr
        assert curl.stdout.startswith("HTTP/1.1 502 Bad Gateway\n")  # text mode: \r\n read as \n
        assert (
            f"the Windows half at 127.0.0.1:{chain.port} expects the link handshake: it runs "
            "without --insecure-no-auth, and this half with it"
        ) in curl.stdout
        found = checks(doctor(chain, "--json", "--insecure-no-auth"))
        assert found["windows-half"]["status"] == "failure"
        assert "expects the link handshake" in found["windows-half"]["finding"]
        fixed = the_command(found["windows-half"]["fix"], "up")
        assert fixed == the_command(curl.stdout, "up")
        assert "--insecure-no-auth" not in fixed
        assert f"--key-file {chain.key_file}" in fixed
        chain.stop("wsl")
        start_printed(chain, fixed, "wsl")
        assert status_through(chain) == 200
        all_green(chain)
    finally:
        chain.stop_all()


def test_a_web_server_on_the_windows_half_port_is_named_as_such(
    program: list[str], tmp_path: Path
) -> None:
    # Answer 3: doctor said the Windows half "refused the link" and gave a fix about keys.
    chain = Chain(program, tmp_path)
    try:
        new_key(chain.key_file)
        argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(chain.port)]
        web = start_process(argv, tmp_path / "web.log")
        chain.processes["web"] = web
        wait_for_process(
            lambda: connectable(socket.AF_INET, ("127.0.0.1", chain.port)), web, "http.server"
        )
        chain.start_wsl_half()
        found = checks(doctor(chain, "--json"))
        half = found["windows-half"]
        assert half["finding"].startswith(
            f"another program holds 127.0.0.1:{chain.port}, not the Windows half of "
            "tailscale-wsl2: it answers HTTP (HTTP/1.0 404 File not found, Server: SimpleHTTP/"
        )
        # About the port and its holder, not about keys.
        assert half["fix"].startswith("stop it (`tailscale-wsl2.exe doctor --side windows ")
        assert half["fix"].endswith("on Windows names it), or run both halves with another --port")
        line = request(chain.socket, "GET", "/localapi/v0/status").body.decode()
        # The sealed link's first message is random: with a line end in it, http.server
        # answers it (an HTTP/0.9 error page, quoted), else it waits (silence, both causes
        # named). Either way the line names another program on that port, not keys.
        assert "another program holds" in line
        assert str(chain.port) in line
        assert "key" not in line.partition(";")[0]
    finally:
        chain.stop_all()


def test_the_start_commands_doctor_prints_carry_the_options_and_work(chain: Chain) -> None:
    # Answer 5: with --key-file, --side and --port given, the printed commands left them out.
    fake_tailscale_cli(chain.workdir / "bin", "1.76.6")
    chain.stop("wsl")
    socket_fix = checks(doctor(chain, "--json"))["socket"]["fix"]
    wsl_up = the_command(socket_fix, "up")
    assert wsl_up == (
        f"tailscale-wsl2 up --side wsl --port {chain.port} --host-ip 127.0.0.1 "
        f"--socket {chain.socket} --key-file {chain.key_file}"
    )
    start_printed(chain, wsl_up, "wsl")
    all_green(chain)

    chain.stop("windows")
    windows_fix = checks(doctor(chain, "--json"))["windows-half"]["fix"]
    start_printed(chain, the_command(windows_fix, "up"), "windows")
    all_green(chain)


def test_the_start_command_for_a_missing_key_makes_the_key(chain: Chain) -> None:
    fake_tailscale_cli(chain.workdir / "bin", "1.76.6")
    chain.stop("wsl")
    chain.stop("windows")
    chain.key_file.unlink()
    found = checks(doctor(chain, "--json"))
    assert found["link-key"]["finding"] == f"no link key at {chain.key_file}"
    windows_up = the_command(found["link-key"]["fix"], "up")
    assert printed_key_file(windows_up) == chain.key_file
    start_printed(chain, windows_up, "windows")
    assert chain.key_file.exists()
    chain.start_wsl_half()
    all_green(chain)


def test_the_fix_for_halves_with_different_keys_restarts_both(chain: Chain) -> None:
    fake_tailscale_cli(chain.workdir / "bin", "1.76.6")
    new_key(chain.key_file)  # the Windows half still holds the old one
    chain.stop("wsl")
    chain.start_wsl_half()
    found = checks(doctor(chain, "--json"))
    assert found["windows-half"]["finding"] == (
        f"the Windows half at 127.0.0.1:{chain.port} refused the link key: "
        "the two halves use different keys"
    )
    fix = found["windows-half"]["fix"]
    chain.stop("windows")
    chain.stop("wsl")
    windows_up, wsl_up = commands_in(fix)
    start_printed(chain, windows_up, "windows")
    start_printed(chain, wsl_up, "wsl")
    all_green(chain)


def test_the_502_of_a_stopped_windows_half_prints_commands_that_work(chain: Chain) -> None:
    fake_tailscale_cli(chain.workdir / "bin", "1.76.6")
    chain.stop("windows")
    answer = request(chain.socket, "GET", "/localapi/v0/status")
    assert answer.status == 502
    windows_up, doctor_here = commands_in(answer.body.decode())
    start_printed(chain, windows_up, "windows")
    assert status_through(chain) == 200
    assert statuses(printed_doctor(chain, doctor_here)) == ALL_GREEN
