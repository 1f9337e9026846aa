"""The .exe's version file read with PyInstaller's own reader, which needs Windows (here Wine):
what build.spec hands to EXE(version=...) loads, with the package's version in it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.test_build_resources import load_tool

pytestmark = pytest.mark.skipif(
    sys.platform != "win32", reason="Windows only (run: tools/winpy -m pytest tests/in_wine)"
)

# Everything below is Windows-only: mypy checks it with --platform win32.
assert sys.platform == "win32" or not TYPE_CHECKING


def test_pyinstaller_loads_the_version_file(tmp_path: Path) -> None:
    from PyInstaller.utils.win32 import versioninfo  # noqa: PLC0415 (needs Windows)

    from tailscale_wsl2 import __version__  # noqa: PLC0415

    resources = load_tool()
    version_file, _ = resources.write_resources(tmp_path)
    info = versioninfo.load_version_info_from_text_file(str(version_file))
    major, minor, patch, build = resources.file_version(__version__)
    assert (info.ffi.fileVersionMS, info.ffi.fileVersionLS) == (
        major << 16 | minor,
        patch << 16 | build,
    )
    [string_file_info, _] = info.kids
    [table] = string_file_info.kids
    strings = {struct.name: struct.val for struct in table.kids}
    assert strings["ProductVersion"] == __version__
