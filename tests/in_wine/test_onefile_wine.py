"""The one-file child's Windows code, for real under Wine (tools/winpy -m pytest tests/in_wine).

- a process's creation time, read through its handle, tells a running process from a gone one;
- a process that follows another gets the stop when that other is terminated (TerminateProcess,
  as Task Manager and Task Scheduler's End do); one that does not stop is ended with what it
  started once the grace has passed (its kill-on-close job); one that follows nothing lives on.

Plain Python processes stand in for the bootloader and its child.
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
    from tailscale_wsl2.tuning._windows_parent import creation_time, follow_process

# Everything below is Windows-only: mypy checks it with --platform win32.
assert sys.platform == "win32" or not TYPE_CHECKING

# Generous for Wine on a loaded machine.
ENDS_WITHIN = 30.0
HOLDER = "import time; print('holding', flush=True); time.sleep(120)"
# A follower: "graceful" stops on the stop as the relay does (Ctrl+C's KeyboardInterrupt);
# "stuck" ignores it, and has a child of its own; "none" follows nothing.
FOLLOWER = """
import signal, subprocess, sys, time
from tailscale_wsl2.tuning._windows_parent import follow_process
holder, how = int(sys.argv[1]), sys.argv[2]
stop = (lambda: signal.raise_signal(signal.SIGINT)) if how == "graceful" else (lambda: None)
print(f"following={follow_process(holder, stop, 1.0) if how != 'none' else None}", flush=True)
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(120)"], stdout=subprocess.DEVNULL
)
print(child.pid, flush=True)
try:
    time.sleep(120)
except KeyboardInterrupt:
    child.kill()
    print("stopped", flush=True)
"""

# A process that asks to follow one started after itself.
YOUNGER = """
import subprocess, sys
from tailscale_wsl2.tuning._windows_parent import follow_process
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(f"following={follow_process(child.pid, lambda: None, 1.0)}", flush=True)
child.kill()
"""


def started(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )


def line(popen: subprocess.Popen[str]) -> str:
    assert popen.stdout is not None
    return popen.stdout.readline().strip()


def ends(pid: int) -> bool:
    deadline = time.monotonic() + ENDS_WITHIN
    while creation_time(pid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_creation_times_of_running_and_gone_processes() -> None:
    own = creation_time(os.getpid())
    assert isinstance(own, int)
    assert own > 0
    child = started("-c", HOLDER)
    try:
        assert line(child) == "holding"
        child_start = creation_time(child.pid)
        assert child_start is not None
        assert child_start >= own  # started later
        assert creation_time(child.pid) == child_start  # the same process, the same time
    finally:
        child.kill()
        child.communicate()
    assert creation_time(child.pid) is None


def test_followers_stop_or_are_ended_when_the_process_they_follow_is_terminated() -> None:
    holder = started("-c", HOLDER)
    hows = ("graceful", "stuck", "none")
    followers = {how: started("-c", FOLLOWER, str(holder.pid), how) for how in hows}
    grandchildren: dict[str, int] = {}
    try:
        assert line(holder) == "holding"
        assert line(followers["graceful"]) == "following=True"
        assert line(followers["stuck"]) == "following=True"
        assert line(followers["none"]) == "following=None"
        grandchildren = {how: int(line(popen)) for how, popen in followers.items()}
        holder.kill()  # TerminateProcess: no chance to do anything

        graceful_out, _ = followers["graceful"].communicate(timeout=ENDS_WITHIN)
        assert graceful_out.strip() == "stopped"  # the stop came, and was a clean one
        assert followers["graceful"].returncode == 0
        assert ends(followers["stuck"].pid), "a follower that ignored the stop outlived the grace"
        assert ends(grandchildren["stuck"]), "what it started was not ended with it"
        assert followers["none"].poll() is None  # following nothing, it lives on
        assert creation_time(grandchildren["none"]) is not None
    finally:
        for popen in (holder, *followers.values()):
            popen.kill()
            popen.communicate()
        for pid in grandchildren.values():
            if creation_time(pid) is not None:
                os.kill(pid, 9)  # TerminateProcess


def test_a_process_already_ended_is_not_followed() -> None:
    gone = started("-c", HOLDER)
    assert line(gone) == "holding"
    gone.kill()
    gone.communicate()
    assert not follow_process(gone.pid, lambda: None, 1.0)


def test_a_process_younger_than_this_one_is_not_its_parent() -> None:
    # A parent's pid, once it has ended, may be given to a later process: never followed.
    younger = started("-c", YOUNGER)
    out, _ = younger.communicate(timeout=ENDS_WITHIN)
    assert out.strip() == "following=False"


def test_what_a_follower_started_ends_when_the_follower_is_ended() -> None:
    # Task Manager's End task on the program itself: its job's one handle closes with it.
    holder = started("-c", HOLDER)
    follower = started("-c", FOLLOWER, str(holder.pid), "stuck")
    try:
        assert line(holder) == "holding"
        assert line(follower) == "following=True"
        grandchild = int(line(follower))
        follower.kill()
        assert ends(grandchild), "what the program started outlived it"
        assert holder.poll() is None  # the job is the program's: the bootloader is not in it
    finally:
        for popen in (holder, follower):
            popen.kill()
            popen.communicate()
