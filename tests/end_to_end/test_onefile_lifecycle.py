"""The frozen binary's two processes, killed the way users and service managers kill them."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.chain import FROZEN_BINARY
from tests.support.ci import require

pytestmark = pytest.mark.frozen

KILLS = 3


def wait_until(condition: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def children_of(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    found: list[int] = []
    for task in tasks.iterdir() if tasks.exists() else []:
        text = (task / "children").read_text()
        found += [int(child) for child in text.split()]
    return found


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_killing_the_started_process_ends_the_relay_and_leaves_nothing(tmp_path: Path) -> None:
    require(FROZEN_BINARY.exists(), f"no frozen binary at {FROZEN_BINARY}: run `make build`")
    socket_path = tmp_path / "tailscaled.sock"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    argv = [str(FROZEN_BINARY), "up", "--side", "wsl", "--socket", str(socket_path)]
    argv += ["--host-ip", "127.0.0.1", "--insecure-no-auth"]
    for _ in range(KILLS):
        started = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            assert wait_until(socket_path.exists), "the WSL2 half never made its socket"
            [relay] = children_of(started.pid)  # the bootloader's one child: the relay
            started.send_signal(signal.SIGKILL)
            started.wait()
            assert wait_until(lambda relay=relay: not is_running(relay)), "the relay outlived it"
            assert wait_until(lambda: not socket_path.exists()), "the socket was left behind"
        finally:
            started.kill()
            started.wait()
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_a_later_start_removes_what_a_killed_pair_left(tmp_path: Path) -> None:
    require(FROZEN_BINARY.exists(), f"no frozen binary at {FROZEN_BINARY}: run `make build`")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    # Both processes killed at once: nobody was left to clean up.
    started = subprocess.Popen(
        [
            str(FROZEN_BINARY),
            "up",
            "--side",
            "wsl",
            "--socket",
            str(tmp_path / "s.sock"),
            "--host-ip",
            "127.0.0.1",
            "--insecure-no-auth",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert wait_until((tmp_path / "s.sock").exists)
    os.killpg(started.pid, signal.SIGKILL)
    started.wait()
    assert [path.name[:4] for path in tmp_path.glob("_MEI*")] == ["_MEI"]
    subprocess.run([str(FROZEN_BINARY), "--version"], env=env, check=True, capture_output=True)
    assert list(tmp_path.glob("_MEI*")) == []
