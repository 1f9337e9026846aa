"""The system seam: a program that gives no answer in time is told apart from one that cannot
run, so a slow netsh is reported as slow, not as unreadable."""

import sys

from tailscale_wsl2.system import CommandResult, TimedOut, run_command, run_command_timed

SLEEPER = [sys.executable, "-c", "import time; time.sleep(30)"]


def test_an_answer_is_captured() -> None:
    answer = run_command_timed([sys.executable, "-c", "print('hello')"])
    assert answer == CommandResult(0, "hello\n")


def test_no_answer_in_time_is_timed_out() -> None:
    assert run_command_timed(SLEEPER, timeout=0.2) == TimedOut(0.2)


def test_a_missing_program_is_none() -> None:
    assert run_command_timed(["/nonexistent/netsh.exe"]) is None


def test_run_command_keeps_none_for_both() -> None:
    assert run_command(SLEEPER, timeout=0.2) is None
    assert run_command(["/nonexistent/netsh.exe"]) is None
