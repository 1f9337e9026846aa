"""`doctor` as users run it, against the loopback chain: all green, then one hop broken at a
time. Runs with the package and with the frozen binary (the `program` fixture)."""

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tailscale_wsl2.cli.app import app
from tailscale_wsl2.doctor import command
from tailscale_wsl2.wsl.side import Side, read_side
from tests.support.chain import Chain, connectable, running_chain, start_process, wait_for_process

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


def doctor(chain: Chain, *extra: str, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run doctor against `chain`; PATH holds `path` only, where given (for the CLI check)."""
    bin_dir = path or chain.workdir / "bin"
    argv = [
        *chain.program,
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
    # As a user who followed doctor's advice for `tailscale up` (the up-defaults check).
    environ = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.defpath}",
        "TS_DEBUG_UP_FLAG_GOOS": "windows",
    }
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
        "start the Windows half: run `tailscale-wsl2.exe up` on Windows"
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
        '`tailscale-wsl2 doctor`"'
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
