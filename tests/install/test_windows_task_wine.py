"""The logon task's XML given to Wine's own schtasks.exe: registered, queried, deleted, as far as
Wine implements them.

Wine 8.0's schtasks implements /Create (with /XML), /Change and /Delete; /Query, /Run and /End
print a FIXME and exit 0 having done nothing. /Create /XML hands the definition to Wine's Task
Scheduler, which writes what it kept to C:\\windows\\system32\\tasks\\NAME: the settings (the
battery flags, the time limit, hidden, the priority, one instance) survive; the logon trigger,
the principal, the action's command and RestartOnFailure do not. Wine also takes a UTF-8 file
that Windows' schtasks refuses, so it cannot check the encoding either. So this checks that our
file is one a Task Scheduler parses, and that the settings fields mean what we think; the
trigger and the action are checked field by field in test_windows_task.py, and only real
Windows runs them.
"""

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tailscale_wsl2.install.windows_task import TaskDefinition, parse_task_xml, task_xml_bytes
from tests.support.wine_chain import WINRUN, prepare_wine, windows_path

pytestmark = pytest.mark.wine

WINE_CACHE = Path(
    os.environ.get("TSWSL_WINE_CACHE", Path.home() / ".cache" / "tailscale-wsl2" / "wine")
)
TASKS = WINE_CACHE / "prefix" / "drive_c" / "windows" / "system32" / "tasks"
DEFINITION = TaskDefinition(
    "WINEPC\\tester",
    "C:\\users\\tester\\AppData\\Local\\Programs\\tailscale-wsl2\\tailscale-wsl2w.exe",
    ("up", "--log-file", "C:\\users\\tester\\AppData\\Local\\tailscale-wsl2\\logs\\t.log"),
)


def schtasks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WINRUN), "schtasks", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def wine_major_version() -> str:
    done = subprocess.run(["wine", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip().removeprefix("wine-").split(".")[0]


def test_wine_registers_our_task_keeps_its_settings_and_deletes_it(tmp_path: Path) -> None:
    prepare_wine("register the logon task")
    name = f"tailscale-wsl2-test-{uuid.uuid4().hex[:12]}"
    xml = tmp_path / "task.xml"
    xml.write_bytes(task_xml_bytes(DEFINITION))
    stored = TASKS / name
    try:
        created = schtasks("/Create", "/TN", name, "/XML", windows_path(xml), "/F")
        assert created.returncode == 0, created.stdout + created.stderr
        fields = parse_task_xml(stored.read_bytes())
        assert fields.written_by_install
        assert not fields.disallow_start_if_on_batteries
        assert not fields.stop_if_going_on_batteries
        assert fields.execution_time_limit == "PT0S"
        assert fields.hidden
        assert fields.priority == 4
        assert fields.multiple_instances_policy == "IgnoreNew"
        assert fields.enabled
        if wine_major_version() == "8":
            # How far Wine 8 goes: these are dropped on registration, and /Query does nothing.
            assert (fields.trigger_kinds, fields.command, fields.restart_count) == ((), "", None)
            queried = schtasks("/Query", "/TN", name, "/XML")
            assert (queried.returncode, queried.stdout) == (0, "")
        deleted = schtasks("/Delete", "/TN", name, "/F")
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr
        assert not stored.exists()
        assert schtasks("/Delete", "/TN", name, "/F").returncode == 1  # nothing left to delete
    finally:
        stored.unlink(missing_ok=True)
