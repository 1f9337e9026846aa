"""A Windows program's headers, as small as a PE loader reads them, for tests of install's
windowless copy (no real .exe needed)."""

from tailscale_wsl2.install.windowless import CONSOLE_SUBSYSTEM

__all__ = ["OPTIONAL", "PE_OFFSET", "synthetic_pe"]

PE_OFFSET = 0x80
OPTIONAL = PE_OFFSET + 4 + 20


def synthetic_pe(
    subsystem: int = CONSOLE_SUBSYSTEM, body: bytes = b"payload!", magic: int = 0x20B
) -> bytes:
    """The headers a PE loader reads, and a body after them (one byte short of even)."""
    image = bytearray(OPTIONAL + 240)
    image[:2] = b"MZ"
    image[0x3C:0x40] = PE_OFFSET.to_bytes(4, "little")
    image[PE_OFFSET : PE_OFFSET + 4] = b"PE\0\0"
    image[OPTIONAL : OPTIONAL + 2] = magic.to_bytes(2, "little")
    image[OPTIONAL + 68 : OPTIONAL + 70] = subsystem.to_bytes(2, "little")
    return bytes(image) + body + b"\x07"
