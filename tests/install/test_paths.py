"""Where install puts things, and a log that stays within its bounds."""

import logging
from pathlib import Path

import pytest

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.install.paths import (
    LOG_BACKUPS,
    LOG_MAX_BYTES,
    environ_value,
    find_first,
    rotating_log_handler,
    windows_paths,
)


def test_windows_paths_come_from_the_users_folders() -> None:
    paths = windows_paths(
        {"LOCALAPPDATA": "C:\\Users\\alice\\AppData\\Local", "TEMP": "C:\\Users\\alice\\Temp"}
    )
    assert (
        paths.exe
        == "C:\\Users\\alice\\AppData\\Local\\Programs\\tailscale-wsl2\\tailscale-wsl2w.exe"
    )
    assert paths.log_dir == "C:\\Users\\alice\\AppData\\Local\\tailscale-wsl2\\logs"
    assert (
        paths.log_file
        == "C:\\Users\\alice\\AppData\\Local\\tailscale-wsl2\\logs\\tailscale-wsl2.log"
    )
    assert paths.task_xml == "C:\\Users\\alice\\Temp\\tailscale-wsl2-task.xml"


def test_windows_variable_names_match_without_case() -> None:
    environ = {"LocalAppData": "D:\\Profiles\\bob\\Local", "tmp": "x", "temp": "D:\\T"}
    assert environ_value(environ, "LOCALAPPDATA") == "D:\\Profiles\\bob\\Local"
    assert windows_paths(environ).task_xml == "D:\\T\\tailscale-wsl2-task.xml"


def test_no_local_app_data_is_a_fixable_error() -> None:
    with pytest.raises(ActionableError, match="%LOCALAPPDATA% is not set"):
        windows_paths({"TEMP": "C:\\Temp"})


def test_the_first_candidate_that_exists() -> None:
    present = {"/bin/systemctl"}
    assert find_first(("/usr/bin/systemctl", "/bin/systemctl"), present.__contains__) == (
        "/bin/systemctl"
    )
    assert find_first(("/usr/bin/systemctl",), present.__contains__) is None


def test_the_default_bound_is_one_mebibyte_times_three() -> None:
    assert (LOG_MAX_BYTES, LOG_BACKUPS) == (1024 * 1024, 3)


def test_the_log_rotates_within_its_bound(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "tailscale-wsl2.log"  # the folder does not exist yet
    handler = rotating_log_handler(path, max_bytes=2000, backups=2)
    logger = logging.getLogger("test_the_log_rotates_within_its_bound")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for number in range(500):
            logger.warning("line %04d %s", number, "x" * 40)
    finally:
        logger.removeHandler(handler)
        handler.close()
    files = sorted(path.parent.iterdir())
    assert [file.name for file in files] == [
        "tailscale-wsl2.log",
        "tailscale-wsl2.log.1",
        "tailscale-wsl2.log.2",
    ]
    assert all(file.stat().st_size <= 2000 for file in files)
    last_line = path.read_text(encoding="utf-8").splitlines()[-1]
    assert last_line.endswith(f"line 0499 {'x' * 40}")
    assert last_line[:4].isdigit()  # dated: a log file spans days
