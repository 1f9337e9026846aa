"""The state file's Windows parts, run for real in a Windows Python (under Wine, or on the
Windows CI runner): a process's identity from GetProcessTimes, and the file replaced whole."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tailscale_wsl2.serve.state import (
    initial_state,
    is_running,
    process_start_token,
    read_state,
    state_path,
    write_state,
)

pytestmark = pytest.mark.skipif(sys.platform != "win32", reason="Windows only (run: tools/winpy)")


def test_this_process_has_a_start_time_and_runs() -> None:
    token = process_start_token(os.getpid())
    assert token is not None
    assert token.startswith("windows:")
    assert is_running(initial_state("windows"))


def test_an_exited_process_is_not_running() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    token = process_start_token(child.pid)
    child.wait()
    assert token is not None
    state = replace(initial_state("windows"), pid=child.pid, process_start=token)
    assert not is_running(state)


def test_the_state_goes_beside_the_link_key_and_is_replaced_whole(tmp_path: Path) -> None:
    path = state_path(
        "windows", platform="win32", environ={"LOCALAPPDATA": str(tmp_path)}, euid=None
    )
    assert path == tmp_path / "tailscale-wsl2" / "state-windows.json"
    state = initial_state("windows", ("up",), str(tmp_path / "t.log"))
    write_state(path, state)
    write_state(path, replace(state, listening="172.27.64.1:41113"))
    assert read_state(path) == replace(state, listening="172.27.64.1:41113")
    assert [entry.name for entry in path.parent.iterdir()] == ["state-windows.json"]
