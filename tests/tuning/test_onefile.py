"""A one-file build's extraction directories: only dead runs of this program are removed."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tailscale_wsl2.tuning.onefile import MARKER, claim, extraction_dir, remove_dead_extraction_dirs

HOLD_LOCK = """
import sys, time
from pathlib import Path
from tailscale_wsl2.tuning.onefile import claim
marker = claim(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(60)
"""


def made(root: Path, name: str, *, marker: bool) -> Path:
    directory = root / name
    directory.mkdir()
    (directory / "libpython3.11.so.1.0").write_bytes(b"\x7fELF")
    if marker:
        (directory / MARKER).write_bytes(b"")
    return directory


def test_a_dead_run_is_removed_and_nothing_else(tmp_path: Path) -> None:
    own = made(tmp_path, "_MEI0000aaaaOwn", marker=True)
    mine = claim(own)
    dead = made(tmp_path, "_MEI0000bbbbDead", marker=True)
    foreign = made(tmp_path, "_MEI0000ccccOther", marker=False)  # another PyInstaller program
    unrelated = made(tmp_path, "tailscale-wsl2-cache", marker=True)
    removed: list[Path] = []
    assert remove_dead_extraction_dirs(tmp_path, own, removed.append) == 1
    assert removed == [dead]
    assert own.exists()
    assert foreign.exists()
    assert unrelated.exists()
    mine.close()


def test_a_live_run_is_left_alone(tmp_path: Path) -> None:
    live = made(tmp_path, "_MEI0000ddddLive", marker=False)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(live)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        removed: list[Path] = []
        assert remove_dead_extraction_dirs(tmp_path, tmp_path / "_MEIown", removed.append) == 0
        assert removed == []
    finally:
        holder.kill()
        holder.communicate()
    # Once its process is gone, the kernel has released the lock: now it is a dead run.
    assert remove_dead_extraction_dirs(tmp_path, tmp_path / "_MEIown", shutil.rmtree) == 1
    assert not live.exists()


def test_a_symlink_named_like_a_run_is_not_followed(tmp_path: Path) -> None:
    target = made(tmp_path, "precious", marker=True)
    (tmp_path / "_MEI0000eeeeLink").symlink_to(target)
    removed: list[Path] = []
    assert remove_dead_extraction_dirs(tmp_path, tmp_path / "_MEIown", removed.append) == 0
    assert target.exists()


def test_running_from_source_is_no_one_file_child(monkeypatch: pytest.MonkeyPatch) -> None:
    assert extraction_dir() is None
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(Path(sys.executable).parent), raising=False)
    assert extraction_dir() is None  # a one-folder build: nothing was extracted
    monkeypatch.setattr(sys, "_MEIPASS", "/tmp/_MEI0000ffffRun", raising=False)
    assert extraction_dir() == Path("/tmp/_MEI0000ffffRun")
