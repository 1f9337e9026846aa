"""The one-file child's Windows code, for real under Wine (tools/winpy -m pytest tests/in_wine).

- a process's creation time, read through its handle, tells a running process from a gone one;
- a process that joins a kill-on-close job held by another ends when that other is terminated
  (TerminateProcess, as Task Manager does), and one that did not join lives on.

Plain Python processes stand in for the bootloader and its child: what is tested is the job,
whoever holds it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform != "win32", reason="Windows only (run: tools/winpy -m pytest tests/in_wine)"
)

if sys.platform == "win32":
    from tailscale_wsl2.tuning.onefile import join_kill_on_close_job_held_by, windows_process_start

# Everything below is Windows-only: mypy checks it with --platform win32.
assert sys.platform == "win32" or not TYPE_CHECKING

# Generous for Wine on a loaded machine; a member still running after it was not tied.
ENDS_WITHIN = 30.0
HOLDER = "import time; print('holding', flush=True); time.sleep(120)"
MEMBER = """
import sys, time
from tailscale_wsl2.tuning.onefile import join_kill_on_close_job_held_by
joined = join_kill_on_close_job_held_by(int(sys.argv[1])) if sys.argv[2] == "join" else None
print(f"joined={joined}", flush=True)
time.sleep(120)
"""


def started(*argv: str) -> subprocess.Popen[str]:
    popen = subprocess.Popen(
        [sys.executable, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    assert popen.stdout is not None
    popen.first_line = popen.stdout.readline().strip()  # type: ignore[attr-defined]
    return popen


def ends(popen: subprocess.Popen[str]) -> bool:
    deadline = time.monotonic() + ENDS_WITHIN
    while popen.poll() is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_creation_times_of_running_and_gone_processes() -> None:
    own = windows_process_start(os.getpid())
    assert isinstance(own, int)
    assert own > 0
    child = started("-c", HOLDER)
    try:
        child_start = windows_process_start(child.pid)
        assert child_start is not None
        assert child_start >= own  # started later
        assert windows_process_start(child.pid) == child_start  # the same process, the same time
    finally:
        child.kill()
        child.communicate()
    assert windows_process_start(child.pid) is None


def test_a_member_of_the_job_ends_when_its_holder_is_terminated() -> None:
    holder = started("-c", HOLDER)
    member = started("-c", MEMBER, str(holder.pid), "join")
    bystander = started("-c", MEMBER, str(holder.pid), "stay out")
    try:
        assert member.first_line == "joined=True"  # type: ignore[attr-defined]
        assert bystander.first_line == "joined=None"  # type: ignore[attr-defined]
        assert member.poll() is None  # the job's handle is open in the holder: no kill yet
        holder.kill()  # TerminateProcess: the holder's handles close with it
        assert ends(member), "the member outlived the holder of its job"
        assert bystander.poll() is None
    finally:
        for popen in (holder, member, bystander):
            popen.kill()
            popen.communicate()


def test_no_job_is_joined_when_the_holder_is_gone() -> None:
    gone = started("-c", HOLDER)
    gone.kill()
    gone.communicate()
    # No handle can go to a process that has ended: nothing is joined, and this process lives.
    assert not join_kill_on_close_job_held_by(gone.pid)
