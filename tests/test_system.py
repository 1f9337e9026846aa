"""The system seam: which file runs for a bare program name (System32 on Windows, WSL's own
places in WSL), and a program that gives no answer in time told apart from one that cannot run,
so a slow netsh is reported as slow, not as unreadable."""

import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from tailscale_wsl2 import system
from tailscale_wsl2.system import (
    WINDOWS_SYSTEM_TOOLS,
    CommandResult,
    ProgramLookup,
    TimedOut,
    resolve_program,
    run_command,
    run_command_timed,
    windows_system_tool,
)

WINDOWS_ENVIRON = {"SystemRoot": r"C:\WINDOWS", "PATH": r"C:\Users\alice\Downloads"}


def windows(environ: Mapping[str, str] = WINDOWS_ENVIRON) -> ProgramLookup:
    # On Windows nothing but the environment is read: PATH and the disk are never consulted.
    def never(_: str) -> None:
        raise AssertionError("a Windows tool's place is not searched for")

    return ProgramLookup("win32", environ, never, never, lambda: None)  # type: ignore[arg-type]


def wsl(
    present: set[str], *, on_path: frozenset[str] = frozenset(), wsl_conf: str | None = None
) -> ProgramLookup:
    return ProgramLookup(
        platform="linux",
        environ={},
        which=lambda name: f"/somewhere/{name}" if name in on_path else None,
        exists=present.__contains__,
        wsl_conf_text=lambda: wsl_conf,
    )


@pytest.mark.parametrize("tool", sorted(WINDOWS_SYSTEM_TOOLS))
def test_every_windows_tool_comes_from_system32(tool: str) -> None:
    assert resolve_program(tool, windows()) == rf"C:\WINDOWS\System32\{tool}.exe"


@pytest.mark.parametrize("name", ["NETSH", "netsh.exe", "Netsh.EXE"])
def test_a_tool_is_recognised_in_any_case_with_or_without_exe(name: str) -> None:
    assert resolve_program(name, windows()) == r"C:\WINDOWS\System32\netsh.exe"


@pytest.mark.parametrize(
    "name",
    [
        r"C:\Users\alice\Downloads\netsh.exe",  # a path: the caller chose the file
        r".\netsh.exe",
        "tailscale-wsl2.exe",  # not a system tool
        "powershell",
    ],
)
def test_paths_and_other_programs_are_left_as_given(name: str) -> None:
    assert resolve_program(name, windows()) == name


def test_without_systemroot_windir_or_the_usual_place_is_used() -> None:
    assert windows_system_tool("sc", {"windir": r"D:\Win"}) == r"D:\Win\System32\sc.exe"
    assert windows_system_tool("sc", {}) == r"C:\Windows\System32\sc.exe"
    # Windows compares variable names without case.
    assert windows_system_tool("sc", {"SYSTEMROOT": r"E:\W"}) == r"E:\W\System32\sc.exe"


def test_in_wsl_a_program_on_path_is_left_to_path() -> None:
    lookup = wsl({"/mnt/c/Windows/System32/cmd.exe"}, on_path=frozenset({"cmd.exe", "wslpath"}))
    assert resolve_program("cmd.exe", lookup) == "cmd.exe"
    assert resolve_program("wslpath", lookup) == "wslpath"


def test_under_sudo_cmd_exe_is_found_under_the_default_automount_root() -> None:
    lookup = wsl({"/mnt/c/Windows/System32/cmd.exe"})
    assert resolve_program("cmd.exe", lookup) == "/mnt/c/Windows/System32/cmd.exe"


def test_cmd_exe_is_found_under_the_automount_root_of_wsl_conf_on_any_drive() -> None:
    conf = "[automount]\nroot = /win\n"
    lookup = wsl({"/win/d/Windows/System32/cmd.exe"}, wsl_conf=conf)
    assert resolve_program("cmd.exe", lookup) == "/win/d/Windows/System32/cmd.exe"


def test_a_root_below_a_line_wsl_stops_at_is_not_taken() -> None:
    # WSL stops reading at the `;` line, so its root is still /mnt/.
    conf = "[network]\n; note\n[automount]\nroot = /win/\n"
    lookup = wsl(
        {"/mnt/c/Windows/System32/cmd.exe", "/win/c/Windows/System32/cmd.exe"}, wsl_conf=conf
    )
    assert resolve_program("cmd.exe", lookup) == "/mnt/c/Windows/System32/cmd.exe"


def test_wslpath_is_found_in_usr_bin_or_bin() -> None:
    assert resolve_program("wslpath", wsl({"/bin/wslpath"})) == "/bin/wslpath"
    assert resolve_program("wslpath", wsl({"/usr/bin/wslpath", "/bin/wslpath"})) == (
        "/usr/bin/wslpath"
    )


def test_nothing_found_leaves_the_name_so_the_failure_reads_as_before() -> None:
    assert resolve_program("cmd.exe", wsl(set())) == "cmd.exe"
    assert resolve_program("wslpath", wsl(set())) == "wslpath"
    # Windows tool names mean nothing in Linux.
    assert resolve_program("netsh", wsl(set())) == "netsh"


def test_run_command_runs_the_resolved_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Callers keep passing bare names (link/key.py passes `cmd.exe`); the file under the
    automount root is what runs."""
    cmd_exe = tmp_path / "c" / "Windows" / "System32" / "cmd.exe"
    cmd_exe.parent.mkdir(parents=True)
    cmd_exe.write_text('#!/bin/sh\necho "cmd.exe ran with: $*"\n')
    cmd_exe.chmod(cmd_exe.stat().st_mode | stat.S_IXUSR)
    lookup = ProgramLookup(
        platform="linux",
        environ={},
        which=lambda _: None,
        exists=os.path.exists,
        wsl_conf_text=lambda: f"[automount]\nroot = {tmp_path}\n",
    )
    monkeypatch.setattr(system, "this_system", lambda: lookup)
    answer = run_command(["cmd.exe", "/d", "/c", "echo %LOCALAPPDATA%"])
    assert answer is not None
    assert answer.output == "cmd.exe ran with: /d /c echo %LOCALAPPDATA%\n"


def test_run_command_of_nothing_is_nothing() -> None:
    assert run_command([]) is None


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
