"""The task's copy of the .exe: marked as a GUI program, checksum made right again."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.install.windowless import (
    CONSOLE_SUBSYSTEM,
    GUI_SUBSYSTEM,
    pe_checksum,
    pe_header_fields,
    windowless_copy,
)
from tests.support.ci import require
from tests.support.pe import OPTIONAL, PE_OFFSET, synthetic_pe
from tests.support.wine_chain import WINE_TEST_EXE


def test_only_the_subsystem_and_the_checksum_change() -> None:
    original = synthetic_pe()
    copy = windowless_copy(original, "tailscale-wsl2.exe")
    assert pe_header_fields(copy) == (GUI_SUBSYSTEM, pe_checksum(copy))
    changed = [index for index, (a, b) in enumerate(zip(original, copy, strict=True)) if a != b]
    assert set(changed) <= {*range(OPTIONAL + 64, OPTIONAL + 68), OPTIONAL + 68, OPTIONAL + 69}
    assert OPTIONAL + 68 in changed


@pytest.mark.parametrize("magic", [0x10B, 0x20B])
def test_pe32_and_pe32_plus_keep_the_subsystem_in_the_same_place(magic: int) -> None:
    copy = windowless_copy(synthetic_pe(magic=magic), "x.exe")
    assert pe_header_fields(copy)[0] == GUI_SUBSYSTEM


def test_the_checksum_counts_its_own_field_as_zero_and_adds_the_length() -> None:
    image = synthetic_pe()
    # Whatever the field holds, the sum is the same: it is left out.
    with_field = bytearray(image)
    with_field[OPTIONAL + 64 : OPTIONAL + 68] = b"\xff\xff\xff\xff"
    assert pe_checksum(image) == pe_checksum(bytes(with_field))
    # One more 16-bit word of value 1 adds 1 to the sum, and 2 to the length.
    assert pe_checksum(image[:-1] + b"\x01\x00") == pe_checksum(image[:-1] + b"\x00\x00") + 1


@pytest.mark.parametrize(
    ("image", "what"),
    [
        (b"not a program at all", "no MZ header"),
        (
            synthetic_pe()[:PE_OFFSET] + b"NE\0\0" + synthetic_pe()[PE_OFFSET + 4 :],
            "no PE signature",
        ),
        (synthetic_pe(magic=0x107), "unknown optional header"),
    ],
)
def test_what_is_not_a_windows_program_is_refused_in_one_line(image: bytes, what: str) -> None:
    with pytest.raises(
        ActionableError, match=f"download.exe is not a Windows program \\({what}\\)"
    ):
        windowless_copy(image, "download.exe")


def test_a_driver_or_other_subsystem_is_refused() -> None:
    with pytest.raises(ActionableError, match="neither a console nor a windowed program"):
        windowless_copy(synthetic_pe(subsystem=1), "x.exe")


def test_the_real_exe_keeps_everything_but_its_window(tmp_path: Path) -> None:
    """The PyInstaller build: our checksum agrees with the one PyInstaller wrote (imagehlp's
    algorithm), and objdump reads the copy as a GUI program whose checksum is right."""
    require(WINE_TEST_EXE.exists(), f"no Windows build at {WINE_TEST_EXE}: make build-windows-test")
    objdump = shutil.which("objdump")
    require(objdump is not None, "objdump (binutils) is not installed")
    assert objdump is not None
    original = WINE_TEST_EXE.read_bytes()
    assert pe_header_fields(original) == (CONSOLE_SUBSYSTEM, pe_checksum(original))
    copy = tmp_path / "tailscale-wsl2w.exe"
    copy.write_bytes(windowless_copy(original, WINE_TEST_EXE.name))
    assert copy.read_bytes()[-4096:] == original[-4096:]  # the appended archive, untouched
    headers = subprocess.run(
        [objdump, "-p", str(copy)], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"^Subsystem\s+00000002\s+\(Windows GUI\)$", headers, re.M), headers
    checksum = re.search(r"^CheckSum\s+([0-9a-f]+)$", headers, re.M)
    assert checksum is not None
    assert int(checksum[1], 16) == pe_checksum(copy.read_bytes())
