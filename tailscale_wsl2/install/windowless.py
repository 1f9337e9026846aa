"""The copy of tailscale-wsl2.exe that the logon task runs: the same program, with no window.

Windows gives a console window to every program whose PE header says "console subsystem" when
it starts without one, and a program started by Task Scheduler at logon starts without one: the
window stays open for as long as the relay runs. A program marked "GUI subsystem" gets no
console at all (it may call AllocConsole; this one never does); its standard streams are then
absent, which is why the task also passes `--log-file`. The mark is one 16-bit field of the
PE optional header, `Subsystem` (3: console, 2: GUI), the field `editbin /SUBSYSTEM` rewrites.

Why a copy of the one release `.exe`, and not a second build with PyInstaller's
`console=False`: one download for users and one artifact for the release. A GUI build would use
PyInstaller's windowed bootloader, which reports a start-up failure in a message box, a box
nobody would see behind a logon task; the console bootloader marked GUI writes that report to
its (absent) standard error instead, and the relay's own log says the rest. PyInstaller's
`hide_console` options hide a console that was already created, so it flashes at logon.

The header also holds a checksum over the whole file, which Windows does not check for a
program but some antivirus products do (PyInstaller sets it for that reason), so it is
computed again: the 16-bit one's-complement sum of the file, its own field counted as zero,
plus the file's length (the algorithm of imagehlp's CheckSumMappedFile).
"""

import array
import sys

from tailscale_wsl2.errors import ActionableError

__all__ = [
    "CONSOLE_SUBSYSTEM",
    "GUI_SUBSYSTEM",
    "pe_checksum",
    "pe_header_fields",
    "windowless_copy",
]

GUI_SUBSYSTEM = 2
CONSOLE_SUBSYSTEM = 3
_PE_POINTER_OFFSET = 0x3C
_COFF_HEADER_SIZE = 20
_CHECKSUM_OFFSET = 64  # in the optional header, PE32 and PE32+ alike
_SUBSYSTEM_OFFSET = 68
_OPTIONAL_MAGICS = (0x10B, 0x20B)  # PE32, PE32+


def _optional_header(image: bytes | bytearray) -> int:
    """Where the optional header starts; ValueError when `image` is not a PE program."""
    if image[:2] != b"MZ" or len(image) < _PE_POINTER_OFFSET + 4:
        raise ValueError("no MZ header")
    pe = int.from_bytes(image[_PE_POINTER_OFFSET : _PE_POINTER_OFFSET + 4], "little")
    if image[pe : pe + 4] != b"PE\0\0":
        raise ValueError("no PE signature")
    optional = pe + 4 + _COFF_HEADER_SIZE
    if len(image) < optional + _SUBSYSTEM_OFFSET + 2:
        raise ValueError("the optional header is cut short")
    if int.from_bytes(image[optional : optional + 2], "little") not in _OPTIONAL_MAGICS:
        raise ValueError("unknown optional header")
    return optional


def pe_header_fields(image: bytes | bytearray) -> tuple[int, int]:
    """(subsystem, checksum) as the header says; ValueError when `image` is not a PE program."""
    optional = _optional_header(image)
    checksum = image[optional + _CHECKSUM_OFFSET : optional + _CHECKSUM_OFFSET + 4]
    subsystem = image[optional + _SUBSYSTEM_OFFSET : optional + _SUBSYSTEM_OFFSET + 2]
    return int.from_bytes(subsystem, "little"), int.from_bytes(checksum, "little")


def pe_checksum(image: bytes | bytearray) -> int:
    """The checksum the header should hold for `image`."""
    field = _optional_header(image) + _CHECKSUM_OFFSET
    padded = bytes(image[:field]) + b"\0\0\0\0" + bytes(image[field + 4 :])
    if len(padded) % 2:
        padded += b"\0"
    words = array.array("H", padded)
    if sys.byteorder == "big":
        words.byteswap()
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (total + len(image)) & 0xFFFFFFFF


def windowless_copy(image: bytes, name: str) -> bytes:
    """`image` (a console program, `name` in messages) marked as a GUI program."""
    try:
        subsystem, _ = pe_header_fields(image)
    except ValueError as exc:
        raise ActionableError(
            f"{name} is not a Windows program ({exc})",
            "download tailscale-wsl2.exe again and run its install",
        ) from None
    if subsystem not in (CONSOLE_SUBSYSTEM, GUI_SUBSYSTEM):
        raise ActionableError(
            f"{name} is neither a console nor a windowed program (subsystem {subsystem})",
            "download tailscale-wsl2.exe again and run its install",
        )
    patched = bytearray(image)
    optional = _optional_header(patched)
    patched[optional + _SUBSYSTEM_OFFSET : optional + _SUBSYSTEM_OFFSET + 2] = (
        GUI_SUBSYSTEM.to_bytes(2, "little")
    )
    checksum = pe_checksum(patched)
    patched[optional + _CHECKSUM_OFFSET : optional + _CHECKSUM_OFFSET + 4] = checksum.to_bytes(
        4, "little"
    )
    return bytes(patched)
