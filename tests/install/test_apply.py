"""Carrying out a plan: in order, stopping at a failure, files replaced whole."""

import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.install.apply import LocalSystem, _cannot, apply_plan
from tailscale_wsl2.install.plan import (
    CopyFile,
    InstallPlan,
    RemoveDirectory,
    RemoveFile,
    RunCommand,
    WriteFile,
)
from tailscale_wsl2.install.windowless import CONSOLE_SUBSYSTEM, GUI_SUBSYSTEM, pe_header_fields
from tests.support.pe import synthetic_pe


class RecordingSystem:
    """Records each operation; commands exit with the status given for them."""

    def __init__(self, statuses: dict[str, int] | None = None, elevation: int | None = 0) -> None:
        self.done: list[tuple[str, ...]] = []
        self.statuses = statuses or {}
        self.elevation = elevation  # None: the UAC prompt is declined

    def write(self, path: str, data: bytes, mode: int) -> None:
        self.done.append(("write", path, data.decode(), oct(mode)))

    def copy(self, source: str, destination: str, mode: int) -> None:
        self.done.append(("copy", source, destination, oct(mode)))

    def copy_windowless(self, source: str, destination: str, mode: int) -> None:
        self.done.append(("copy windowless", source, destination, oct(mode)))

    def remove(self, path: str) -> None:
        self.done.append(("remove", path))

    def remove_directory(self, path: str) -> None:
        self.done.append(("remove folder", path))

    def run(self, argv: Sequence[str]) -> int:
        self.done.append(("run", *argv))
        return self.statuses.get(argv[-1], 0)

    def run_elevated(self, argv: Sequence[str]) -> int | None:
        self.done.append(("run elevated", *argv))
        return self.elevation


PLAN = InstallPlan(
    (
        CopyFile("/tmp/a", "/usr/local/bin/b"),
        WriteFile.utf8("/etc/u", "unit\n"),
        RunCommand(("/bin/ctl", "stop-old"), may_fail=True),
        RunCommand(("/bin/ctl", "start")),
        RemoveFile("/tmp/x"),
    )
)


def test_steps_run_in_order() -> None:
    system = RecordingSystem()
    apply_plan(PLAN, system)
    assert system.done == [
        ("copy", "/tmp/a", "/usr/local/bin/b", "0o755"),
        ("write", "/etc/u", "unit\n", "0o644"),
        ("run", "/bin/ctl", "stop-old"),
        ("run", "/bin/ctl", "start"),
        ("remove", "/tmp/x"),
    ]


def test_a_command_that_may_fail_does_not_stop_the_rest() -> None:
    system = RecordingSystem({"stop-old": 1})
    apply_plan(PLAN, system)
    assert system.done[-1] == ("remove", "/tmp/x")


def test_a_failing_command_stops_the_rest_with_one_line() -> None:
    system = RecordingSystem({"start": 5})
    with pytest.raises(ActionableError, match=r"`/bin/ctl start` failed \(exit status 5\)"):
        apply_plan(PLAN, system)
    assert system.done[-1] == ("run", "/bin/ctl", "start")


def test_local_files_are_written_whole_with_their_mode(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "systemd" / "unit.service"
    system = LocalSystem()
    system.write(str(target), b"first\n", 0o600)
    system.write(str(target), b"second\n", 0o644)
    assert target.read_bytes() == b"second\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(path.name for path in target.parent.iterdir()) == ["unit.service"]


def test_a_missing_source_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "tailscale-wsl2"
    target.write_bytes(b"old program")
    with pytest.raises(ActionableError, match=r"cannot read .*missing: No such file"):
        LocalSystem().copy(str(tmp_path / "missing"), str(target), 0o755)
    assert target.read_bytes() == b"old program"
    assert [path.name for path in tmp_path.iterdir()] == ["tailscale-wsl2"]


def test_a_failed_replacement_leaves_what_was_there_and_no_temporary_file(
    tmp_path: Path,
) -> None:
    target = tmp_path / "tailscale-wsl2.service"
    target.mkdir()  # the file is filled, then renaming it over a directory fails
    (target / "kept").write_text("kept")
    with pytest.raises(ActionableError, match="cannot write"):
        LocalSystem().write(str(target), b"[Unit]\n", 0o644)
    assert (target / "kept").read_text() == "kept"
    assert [path.name for path in tmp_path.iterdir()] == ["tailscale-wsl2.service"]


def test_no_permission_says_to_run_as_root(tmp_path: Path) -> None:
    with pytest.raises(ActionableError, match="cannot write /proc/version") as caught:
        LocalSystem().write("/proc/version", b"x", 0o644)
    assert caught.value.fix


def test_local_copy_and_remove(tmp_path: Path) -> None:
    source = tmp_path / "tailscale-wsl2"
    source.write_bytes(b"\x7fELF" + bytes(range(256)) * 100)
    destination = tmp_path / "usr" / "local" / "bin" / "tailscale-wsl2"
    system = LocalSystem()
    system.copy(str(source), str(destination), 0o755)
    assert destination.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(destination.stat().st_mode) == 0o755
    system.remove(str(destination))
    system.remove(str(destination))  # already gone is fine
    assert not destination.exists()


def test_local_commands_report_their_status(tmp_path: Path) -> None:
    system = LocalSystem()
    assert system.run(["/bin/sh", "-c", "exit 3"]) == 3
    with pytest.raises(ActionableError, match="cannot run /nonexistent/systemctl"):
        system.run(["/nonexistent/systemctl"])


NETSH = "C:\\WINDOWS\\System32\\netsh.exe"
WINDOWS_PLAN = InstallPlan(
    (
        CopyFile("C:\\Downloads\\t.exe", "C:\\P\\tw.exe", windowless=True),
        RunCommand((NETSH, "advfirewall", "firewall", "add", "rule", "name=t"), elevated=True),
        RunCommand(("schtasks", "/Run")),
        RemoveDirectory("C:\\P"),
    ),
    shell="windows",
)


def test_windowless_copies_and_elevated_commands_go_to_their_own_seams() -> None:
    system = RecordingSystem()
    apply_plan(WINDOWS_PLAN, system)
    assert system.done == [
        ("copy windowless", "C:\\Downloads\\t.exe", "C:\\P\\tw.exe", "0o755"),
        ("run elevated", NETSH, "advfirewall", "firewall", "add", "rule", "name=t"),
        ("run", "schtasks", "/Run"),
        ("remove folder", "C:\\P"),
    ]


def test_a_declined_uac_prompt_stops_with_the_command_for_an_elevated_shell() -> None:
    system = RecordingSystem(elevation=None)
    with pytest.raises(ActionableError) as caught:
        apply_plan(WINDOWS_PLAN, system)
    assert caught.value.what == "this step needs administrator rights, and elevation was declined"
    assert "netsh.exe advfirewall firewall add rule name=t" in (caught.value.fix or "")
    assert system.done[-1][0] == "run elevated"  # nothing after it ran


def test_a_failing_elevated_command_stops_the_rest() -> None:
    with pytest.raises(ActionableError, match=r"failed \(exit status 1\)"):
        apply_plan(WINDOWS_PLAN, RecordingSystem(elevation=1))


def test_the_local_windowless_copy_is_marked_gui(tmp_path: Path) -> None:
    source = tmp_path / "tailscale-wsl2.exe"
    source.write_bytes(synthetic_pe())
    destination = tmp_path / "Programs" / "tailscale-wsl2" / "tailscale-wsl2w.exe"
    LocalSystem().copy_windowless(str(source), str(destination), 0o755)
    assert pe_header_fields(destination.read_bytes())[0] == GUI_SUBSYSTEM
    assert pe_header_fields(source.read_bytes())[0] == CONSOLE_SUBSYSTEM  # the original stays


def test_a_folder_is_removed_only_when_empty(tmp_path: Path) -> None:
    kept, emptied = tmp_path / "kept", tmp_path / "emptied"
    kept.mkdir()
    (kept / "the user's file").write_text("mine")
    emptied.mkdir()
    system = LocalSystem()
    for folder in (kept, emptied, tmp_path / "missing"):
        system.remove_directory(str(folder))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept"]
    assert (kept / "the user's file").read_text() == "mine"


def test_on_windows_a_program_still_running_is_named_with_how_to_end_it() -> None:
    exe = "C:\\Users\\alice\\AppData\\Local\\Programs\\tailscale-wsl2\\tailscale-wsl2w.exe"
    error = _cannot("write", exe, PermissionError(13, "Access denied"), platform="win32")
    assert str(error) == (
        f"cannot write {exe}: the program is running; end it "
        "(`taskkill /IM tailscale-wsl2w.exe /F` in a shell), then run install again"
    )
    other = _cannot("write", "/etc/wsl.conf", PermissionError(13, "Permission denied"), "linux")
    assert other.fix == "run it as root (sudo) or as Administrator"
