"""A one-file build's extraction directories: only those of dead runs of this program go.

The rules are fed real /proc lines and real process states (a zombie, a stopped process); the
frozen binary itself is killed in tests/end_to_end/test_onefile_lifecycle.py.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tailscale_wsl2.tuning.onefile import (
    MARKER,
    PidSpace,
    ProcessId,
    Run,
    claim,
    extraction_dir,
    is_bootloader_gone,
    is_dead_run,
    linux_process_start,
    onefile_lifecycle,
    parse_marker,
    parse_stat_start,
    remove_dead_extraction_dirs,
    this_pid_space,
)

# /proc/<pid>/stat lines as Linux writes them (start time: field 22).
STAT_SLEEPING = (
    "10516 (tailscale-wsl2) S 10514 10514 32060 0 -1 4194560 2719 0 0 0 25 6 0 0 20 0 1 0 "
    "1392615 31043584 4611 18446744073709551615 1 1 0 0 0 0 0 16781312 16386 0 0 0 17 1 0 0"
)
# A name with a space and a closing parenthesis, which a split on spaces would misread.
STAT_ODD_NAME = (
    "4242 (a) b (c)) R 1 4242 4242 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 "
    "777 3133440 414 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0"
)
STAT_ZOMBIE = (
    "10518 (tailscale-wsl2) Z 10516 10514 32060 0 -1 4227076 3702 0 0 0 30 4 0 0 20 0 1 0 "
    "1392628 0 0 18446744073709551615 0 0 0 0 0 0 0 16781312 16386 0 0 0 17 0 0 0"
)

HERE = PidSpace("b125d6d0-bfaa-4f16-8294-ccf3bcdcd24a", "pid:[4026531836]")
BOOTLOADER = ProcessId(10516, 1392615)
PROGRAM = ProcessId(10518, 1392628)


def made(root: Path, name: str, marker: str | None) -> Path:
    directory = root / name
    directory.mkdir()
    (directory / "libpython3.11.so.1.0").write_bytes(b"\x7fELF")
    if marker is not None:
        (directory / MARKER).write_text(marker)
    return directory


def dead(directory: Path, running: dict[int, int], space: PidSpace = HERE) -> bool:
    return is_dead_run(directory, running.get, space)


def test_stat_lines_give_the_start_time_of_running_processes_only() -> None:
    assert parse_stat_start(STAT_SLEEPING) == 1392615
    assert parse_stat_start(STAT_ODD_NAME) == 777
    assert parse_stat_start(STAT_ZOMBIE) is None  # exited: it runs no more code
    assert parse_stat_start("12 (cut short) S 1 2") is None


def test_this_process_and_a_gone_one(tmp_path: Path) -> None:
    if sys.platform != "linux":
        pytest.skip("/proc is Linux's")
    own = Path("/proc/self/stat").read_text()
    assert linux_process_start(os.getpid()) == parse_stat_start(own)
    (tmp_path / "77").mkdir()
    (tmp_path / "77" / "stat").write_text(STAT_SLEEPING)
    assert linux_process_start(77, tmp_path) == 1392615
    assert linux_process_start(78, tmp_path) is None


@pytest.mark.skipif(sys.platform != "linux", reason="/proc is Linux's")
def test_a_zombie_is_gone_and_a_stopped_process_is_not() -> None:
    child = subprocess.Popen(["/bin/sleep", "60"])
    try:
        started = linux_process_start(child.pid)
        assert started is not None
        identity = ProcessId(child.pid, started)
        child.send_signal(signal.SIGSTOP)  # a bootloader stopped in a debugger still owns its run
        assert identity.is_running(linux_process_start)
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped
        assert not identity.is_running(linux_process_start)
    finally:
        child.kill()
        child.wait()


def test_a_marker_says_which_run_and_where() -> None:
    run = Run(BOOTLOADER, PROGRAM, HERE)
    assert run.text() == (
        "10516 1392615 10518 1392628 b125d6d0-bfaa-4f16-8294-ccf3bcdcd24a pid:[4026531836]\n"
    )
    assert parse_marker(run.text()) == run
    windows = Run(ProcessId(4, 133_000_000_000_000_000), ProcessId(8, 1), PidSpace())
    assert windows.text() == "4 133000000000000000 8 1\n"
    assert parse_marker(windows.text()) == windows
    for damaged in ["", "10516 1392615 10518", "a b c d", "1 2 3 4 5", "1 2 3 -4"]:
        assert parse_marker(damaged) is None


def test_claim_writes_the_marker_whole(tmp_path: Path) -> None:
    run = Run(BOOTLOADER, PROGRAM, HERE)
    claim(tmp_path, run)
    assert parse_marker((tmp_path / MARKER).read_text()) == run
    assert sorted(path.name for path in tmp_path.iterdir()) == [MARKER]  # no partial left


def test_a_run_whose_bootloader_lives_is_never_dead(tmp_path: Path) -> None:
    # The race this rule closes: the program has exited, and its bootloader is removing the
    # directory right now. Removing it too makes the bootloader fail and say so on stderr.
    directory = made(tmp_path, "_MEI000029144UDmzh", Run(BOOTLOADER, PROGRAM, HERE).text())
    assert not dead(directory, {BOOTLOADER.pid: BOOTLOADER.start})
    assert not dead(directory, {PROGRAM.pid: PROGRAM.start})  # an orphan, still draining
    assert dead(directory, {})


def test_a_reused_pid_is_not_the_recorded_process(tmp_path: Path) -> None:
    directory = made(tmp_path, "_MEI000029144UDmzh", Run(BOOTLOADER, PROGRAM, HERE).text())
    assert dead(directory, {BOOTLOADER.pid: BOOTLOADER.start + 1, PROGRAM.pid: 5})


def test_pids_are_judged_only_where_they_were_given(tmp_path: Path) -> None:
    directory = made(tmp_path, "_MEI000029144UDmzh", Run(BOOTLOADER, PROGRAM, HERE).text())
    running = {BOOTLOADER.pid: BOOTLOADER.start}
    # Another boot: whatever runs under those pids now, that run ended with the machine.
    assert dead(directory, running, PidSpace("another-boot", HERE.namespace))
    # Another pid namespace (a container sharing /tmp): its pids mean nothing here.
    assert not dead(directory, {}, PidSpace(HERE.boot, "pid:[4026532999]"))
    assert not dead(directory, {}, PidSpace("unknown", "unknown"))


def test_no_marker_or_a_foreign_one_is_never_dead(tmp_path: Path) -> None:
    starting = made(tmp_path, "_MEI00002915aaaaaa", None)  # a run not yet marked, or not ours
    foreign = made(tmp_path, "_MEI00002916bbbbbb", "{'pid': 12}")
    assert not dead(starting, {})
    assert not dead(foreign, {})


def test_only_marked_directories_of_dead_runs_are_removed(tmp_path: Path) -> None:
    of_dead_run = made(tmp_path, "_MEI00000001aaaaaa", "")
    unrelated = made(tmp_path, "tailscale-wsl2-cache", "")
    precious = made(tmp_path, "precious", "")
    (tmp_path / "_MEI00000002link").symlink_to(precious)
    (tmp_path / "_MEI00000003file").write_text("")
    asked: list[Path] = []

    def is_dead(directory: Path) -> bool:
        asked.append(directory)
        return True

    removed: list[Path] = []
    assert remove_dead_extraction_dirs(tmp_path, is_dead, removed.append) == [of_dead_run]
    assert removed == [of_dead_run]
    assert asked == [of_dead_run]
    assert unrelated.exists()
    assert precious.exists()


def test_another_users_directory_is_not_touched(tmp_path: Path) -> None:
    theirs = made(tmp_path, "_MEI00000004cccccc", "")
    another_user = theirs.stat().st_uid + 1  # as if it ran as someone else
    removed: list[Path] = []
    assert remove_dead_extraction_dirs(tmp_path, lambda _: True, removed.append, another_user) == []
    assert theirs.exists()
    # The same directory, its owner asking: removed (the test can fail).
    assert remove_dead_extraction_dirs(
        tmp_path, lambda _: True, removed.append, another_user - 1
    ) == [theirs]


def test_a_missing_temporary_directory_removes_nothing(tmp_path: Path) -> None:
    assert remove_dead_extraction_dirs(tmp_path / "gone", lambda _: True, print) == []


def test_the_bootloader_runs_the_same_executable_and_init_does_not(tmp_path: Path) -> None:
    program = tmp_path / "tailscale-wsl2"
    program.write_bytes(b"\x7fELF")
    (tmp_path / "init").write_bytes(b"\x7fELF")
    for pid, exe in [("self", program), ("10516", program), ("1", tmp_path / "init")]:
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "exe").symlink_to(exe)
    assert not is_bootloader_gone(10516, tmp_path)
    assert is_bootloader_gone(1, tmp_path)  # the orphan's new parent
    assert is_bootloader_gone(99, tmp_path)  # gone, or not ours to look at


def test_without_proc_nothing_is_judged_gone(tmp_path: Path) -> None:
    # A system without /proc: the program runs on rather than taking its parent for dead.
    assert not is_bootloader_gone(10516, tmp_path)


def test_the_pid_space_is_this_boot_and_namespace(tmp_path: Path) -> None:
    if sys.platform == "win32":
        assert this_pid_space(tmp_path) == PidSpace()
        return
    assert this_pid_space(tmp_path) == PidSpace("unknown", "unknown")
    (tmp_path / "sys" / "kernel" / "random").mkdir(parents=True)
    (tmp_path / "sys" / "kernel" / "random" / "boot_id").write_text(HERE.boot + "\n")
    (tmp_path / "self" / "ns").mkdir(parents=True)
    (tmp_path / "self" / "ns" / "pid").symlink_to(HERE.namespace)
    assert this_pid_space(tmp_path) == HERE


def test_outside_a_one_file_child_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    assert extraction_dir() is None
    with onefile_lifecycle():
        pass  # no marker written, no directory removed, no signal asked for
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(Path(sys.executable).parent), raising=False)
    assert extraction_dir() is None  # a one-folder build: nothing was extracted
    monkeypatch.setattr(sys, "_MEIPASS", "/tmp/_MEI000029144UDmzh", raising=False)
    assert extraction_dir() == Path("/tmp/_MEI000029144UDmzh")
