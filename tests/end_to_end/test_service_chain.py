"""status, logs and install --dry-run against real halves: a running chain, then a stopped one.

Each half keeps its state file in a directory of its own (TAILSCALE_WSL2_STATE_DIR), as the
two halves do on their two machines. Run as the package and as the frozen binary (`program`).
Nothing here writes outside the test's directory: install runs with --dry-run only, and this
machine's /etc/wsl.conf is checked to be as it was.
"""

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.chain import Chain
from tests.support.http_client import request

WSL_CONF = Path("/etc/wsl.conf")


@pytest.fixture
def chain(program: list[str], tmp_path: Path) -> Iterator[Chain]:
    chain = Chain(program, tmp_path)
    try:
        yield chain
    finally:
        chain.stop_all()


def state_env(chain: Chain, half: str) -> dict[str, str]:
    return {"TAILSCALE_WSL2_STATE_DIR": str(chain.workdir / f"{half}-state")}


def run(chain: Chain, half: str, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **state_env(chain, half)}
    return subprocess.run(
        [*chain.program, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )


def status(chain: Chain, half: str) -> tuple[int, dict[str, Any]]:
    done = run(chain, half, "status", "--side", half, "--json")
    return done.returncode, json.loads(done.stdout)


def eventually(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def next_hop(chain: Chain, half: str) -> str | None:
    _, document = status(chain, half)
    running = document["running"]
    return None if running is None else str(running["next_hop"]["health"])


def test_status_and_logs_of_a_running_chain_then_a_stopped_one(chain: Chain) -> None:
    wsl_log = chain.workdir / "wsl-half.log"
    chain.start_localapi()
    windows = chain.start_windows_half(env=state_env(chain, "windows"))
    chain.start_wsl_half("--log-file", str(wsl_log), env=state_env(chain, "wsl"))

    # The WSL2 half's warm links reach the Windows half at start.
    eventually(lambda: next_hop(chain, "wsl") == "reachable", "the WSL2 half finds its hop")
    code, document = status(chain, "wsl")
    assert (code, document["healthy"]) == (0, True)
    running = document["running"]
    assert running["listening"] == str(chain.socket)
    assert running["relaying_to"] == (
        f"the Windows half of tailscale-wsl2 at 127.0.0.1:{chain.port}"
    )
    # The command line as it ran: `python -m tailscale_wsl2 up ...` for the package.
    assert Path(running["executable"]).resolve() == Path(chain.program[0]).resolve()
    after = [*chain.program[1:], "up", "--side", "wsl"]
    assert running["arguments"][: len(after)] == after
    assert running["log_file"] == str(wsl_log)
    assert document["log"] == str(wsl_log)
    text = run(chain, "wsl", "status", "--side", "wsl")
    assert text.stdout.splitlines()[0] == "tailscale-wsl2 (WSL2 half): running, next hop reachable"

    # The Windows half (a fixed --upstream) learns its hop from its connections.
    assert request(chain.socket, "GET", "/localapi/v0/status").status == 200
    eventually(lambda: next_hop(chain, "windows") == "reachable", "the Windows half's hop")
    code, document = status(chain, "windows")
    assert code == 0
    assert document["running"]["listening"] == f"127.0.0.1:{chain.port}"
    assert document["running"]["relaying_to"] == (
        f"Tailscale's LocalAPI on Windows at {chain.localapi_socket}"
    )

    logs = run(chain, "wsl", "logs", "--side", "wsl", "-n", "50")
    assert logs.returncode == 0, logs.stderr
    assert f"listening on {chain.socket} (mode 660)" in logs.stdout

    # The Windows half stops: the WSL2 half finds out with its next client.
    chain.stop("windows")
    assert windows.popen.returncode == 0
    assert not (chain.workdir / "windows-state" / "state-windows.json").exists()
    assert request(chain.socket, "GET", "/localapi/v0/status").status == 502
    eventually(lambda: next_hop(chain, "wsl") == "unreachable", "the WSL2 half sees it down")
    code, document = status(chain, "wsl")
    assert (code, document["healthy"]) == (1, False)
    assert "is not reachable at 127.0.0.1" in document["running"]["next_hop"]["detail"]
    code, document = status(chain, "windows")
    assert (code, document["running"], document["stale_state"]) == (1, None, None)

    chain.stop("wsl")
    code, document = status(chain, "wsl")
    assert (code, document["running"]) == (1, None)
    done = run(chain, "wsl", "status", "--side", "wsl")
    assert done.stdout.splitlines()[:3] == [
        "tailscale-wsl2 (WSL2 half): not running (not installed)",
        "installed:  no",
        "running:    no",
    ]


def test_install_dry_run_beside_a_running_half_and_a_stopped_one(chain: Chain) -> None:
    conf_before = WSL_CONF.read_bytes() if WSL_CONF.exists() else None
    chain.start_localapi()
    chain.start_windows_half()
    wsl = chain.start_wsl_half(env=state_env(chain, "wsl"))
    dry_run = ("install", "--side", "wsl", "--dry-run", "--key-file", str(chain.key_file))

    eventually(lambda: next_hop(chain, "wsl") is not None, "the WSL2 half's state")
    beside = run(chain, "wsl", *dry_run)
    assert beside.returncode in (0, 1), beside.stderr
    shown = beside.stdout + beside.stderr
    relay_pid = status(chain, "wsl")[1]["running"]["pid"]
    # Without systemd the boot command takes over at WSL's next start, and says so; with
    # systemd the copy started by hand is in the way, and install says how to stop it.
    assert f"(pid {relay_pid}" in shown
    assert f"--key-file {chain.key_file}" in shown or "started by hand" in shown

    chain.stop("wsl")
    assert wsl.popen.returncode == 0
    alone = run(chain, "wsl", *dry_run)
    assert alone.returncode == 0, alone.stderr
    assert f"--key-file {chain.key_file}" in alone.stdout
    assert f"(pid {relay_pid}" not in alone.stdout
    assert (WSL_CONF.read_bytes() if WSL_CONF.exists() else None) == conf_before
