"""Administrator rights on Windows: are we elevated, and running one command through UAC.

Changing a firewall rule needs an elevated process. Rather than telling the user to reopen a
shell "as administrator", `firewall add` asks for elevation the standard way: ShellExecuteExW
with the "runas" verb shows the UAC prompt and starts the command elevated. The elevated
process cannot hand its output back (it is not our child in the console sense), so only its
exit status is returned; the caller prints the exact command when the prompt is declined.

Strategy: plain Win32 through ctypes with explicit argtypes (as `_windows_pipe.py`). Windows
only: importing this module elsewhere raises ImportError.
"""

import ctypes
import subprocess
import sys
from collections.abc import Sequence
from ctypes import wintypes
from typing import Final

from tailscale_wsl2.system import resolve_program

if sys.platform != "win32":
    raise ImportError("tailscale_wsl2.windows.elevation is Windows-only")

__all__ = ["is_admin", "run_elevated"]

_SEE_MASK_NOCLOSEPROCESS: Final = 0x00000040
_SEE_MASK_NOASYNC: Final = 0x00000100
_SW_HIDE: Final = 0
_INFINITE: Final = 0xFFFFFFFF


class _ShellExecuteInfo(ctypes.Structure):
    _fields_ = (
        ("cbSize", wintypes.DWORD),
        ("fMask", wintypes.ULONG),
        ("hwnd", wintypes.HWND),
        ("lpVerb", wintypes.LPCWSTR),
        ("lpFile", wintypes.LPCWSTR),
        ("lpParameters", wintypes.LPCWSTR),
        ("lpDirectory", wintypes.LPCWSTR),
        ("nShow", ctypes.c_int),
        ("hInstApp", wintypes.HINSTANCE),
        ("lpIDList", wintypes.LPVOID),
        ("lpClass", wintypes.LPCWSTR),
        ("hkeyClass", wintypes.HKEY),
        ("dwHotKey", wintypes.DWORD),
        ("hIconOrMonitor", wintypes.HANDLE),
        ("hProcess", wintypes.HANDLE),
    )


_shell32 = ctypes.WinDLL("shell32", use_last_error=True)
_kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)

_IsUserAnAdmin = _shell32.IsUserAnAdmin
_IsUserAnAdmin.argtypes = ()
_IsUserAnAdmin.restype = wintypes.BOOL

_ShellExecuteExW = _shell32.ShellExecuteExW
_ShellExecuteExW.argtypes = (ctypes.POINTER(_ShellExecuteInfo),)
_ShellExecuteExW.restype = wintypes.BOOL

_WaitForSingleObject = _kernel32.WaitForSingleObject
_WaitForSingleObject.argtypes = (wintypes.HANDLE, wintypes.DWORD)
_WaitForSingleObject.restype = wintypes.DWORD

_GetExitCodeProcess = _kernel32.GetExitCodeProcess
_GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
_GetExitCodeProcess.restype = wintypes.BOOL

_CloseHandle = _kernel32.CloseHandle
_CloseHandle.argtypes = (wintypes.HANDLE,)
_CloseHandle.restype = wintypes.BOOL


def is_admin() -> bool:
    """Whether this process runs elevated (as an administrator)."""
    return bool(_IsUserAnAdmin())


def run_elevated(argv: Sequence[str]) -> int | None:
    """Run `argv` elevated through the UAC prompt and wait for it: its exit status, or None
    when the prompt was declined or elevation is not possible here."""
    info = _ShellExecuteInfo()
    info.cbSize = ctypes.sizeof(info)
    info.fMask = _SEE_MASK_NOCLOSEPROCESS | _SEE_MASK_NOASYNC
    info.lpVerb = "runas"
    # ShellExecuteExW looks for a bare name in the current directory first: resolved, as
    # run_command resolves it, so that a planted netsh.exe is never the one elevated.
    info.lpFile = resolve_program(argv[0])
    info.lpParameters = subprocess.list2cmdline(argv[1:])
    info.nShow = _SW_HIDE
    if not _ShellExecuteExW(ctypes.byref(info)) or not info.hProcess:
        # ERROR_CANCELLED (declined) or any reason elevation cannot happen: either way the
        # caller prints the command for an elevated shell.
        return None
    try:
        _WaitForSingleObject(info.hProcess, _INFINITE)
        status = wintypes.DWORD()
        if not _GetExitCodeProcess(info.hProcess, ctypes.byref(status)):
            raise ctypes.WinError(ctypes.get_last_error())
        return status.value
    finally:
        _CloseHandle(info.hProcess)
