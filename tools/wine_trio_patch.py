"""Test-only patch that lets trio's Windows event loop start under Wine 8.0.

Why: when trio's IOCP loop starts it checks for layered socket providers by comparing
`WSAIoctl(SIO_BSP_HANDLE_SELECT)` with `SIO_BASE_HANDLE` on a fresh socket. Wine 8.0 does not
implement SIO_BSP_HANDLE_SELECT and answers WSAEOPNOTSUPP (10045), so `trio.run` dies at its
first socket. Wine does implement
SIO_BASE_HANDLE, which is the right answer wherever no layered providers exist (Wine has none).

Strategy: wrap trio's private `_get_underlying_socket` so that exactly that failure (error
10045 for SIO_BSP_HANDLE_SELECT) is answered with SIO_BASE_HANDLE; every other call and error
passes through unchanged. The patch applies only when `ntdll.wine_get_version` exists, i.e.
under Wine, never on real Windows, and it is never part of the shipped package: the Windows test
suite applies it from tests/in_wine/conftest.py, and a Wine test build of the frozen binary can
use this file directly as a PyInstaller runtime hook (`--runtime-hook tools/wine_trio_patch.py`;
runtime hooks run as `__main__`).
"""

from __future__ import annotations

import ctypes
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trio._core._windows_cffi import Handle
    from trio._file_io import _HasFileNo

__all__ = ["WSAEOPNOTSUPP", "patch_trio_for_wine", "running_under_wine"]

# Winsock's "operation not supported", Wine's answer to SIO_BSP_HANDLE_SELECT.
WSAEOPNOTSUPP = 10045


def running_under_wine() -> bool:
    """Whether this is a Windows process running under Wine (Wine's ntdll has an extra export)."""
    if sys.platform != "win32":
        return False
    try:
        ntdll = ctypes.WinDLL("ntdll")
    except OSError:
        return False
    return hasattr(ntdll, "wine_get_version")


def patch_trio_for_wine() -> bool:
    """Apply the SIO_BASE_HANDLE fallback when under Wine; idempotent.

    Returns whether trio now carries the patch. Call it before the first `trio.run`.
    """
    if sys.platform != "win32" or not running_under_wine():
        return False

    from trio._core import _io_windows  # noqa: PLC0415 (trio's Windows module: import late)
    from trio._core._windows_cffi import WSAIoctls  # noqa: PLC0415

    original = _io_windows._get_underlying_socket
    if original.__name__ == "_get_underlying_socket_with_wine_fallback":
        return True

    def _get_underlying_socket_with_wine_fallback(
        sock: _HasFileNo | int | Handle,
        *,
        which: WSAIoctls = WSAIoctls.SIO_BASE_HANDLE,
    ) -> Handle:
        try:
            return original(sock, which=which)
        except OSError as exc:
            if which != WSAIoctls.SIO_BSP_HANDLE_SELECT or exc.winerror != WSAEOPNOTSUPP:
                raise
            return original(sock, which=WSAIoctls.SIO_BASE_HANDLE)

    _io_windows._get_underlying_socket = _get_underlying_socket_with_wine_fallback
    return True


if __name__ == "__main__":
    # Run as a script, i.e. as a PyInstaller runtime hook of a Wine test build.
    patch_trio_for_wine()
