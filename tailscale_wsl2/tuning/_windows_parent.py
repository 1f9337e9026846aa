"""Windows: a process's creation time, and a one-file child that ends when its bootloader ends.

Windows has no parent-death signal, and PyInstaller's Windows bootloader puts its child in no
job (6.22.3's run.exe imports none of the job functions): killing the bootloader (Task
Manager, Task Scheduler's End, logoff) leaves the program running. So a thread of the program
waits on the bootloader; when the bootloader ends, it asks for the stop Ctrl+C gives (the
running half drains and removes its state) and allows it `grace` seconds; a program still
running then is stuck, and exits. The program is in a job of its own that ends its processes
when its one handle, kept by the program, closes (JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE): however
the program ends, what it started ends with it. (The handle is never closed by hand: under
Wine 8.0, a member closing the last handle of its own job ends its parent too.)

The bootloader is opened by pid and then proved by its creation time: Windows never re-parents,
and a pid whose process began after this one is a reused one.
"""

import ctypes
import os
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["creation_time", "follow_process", "kernel32"]

SYNCHRONIZE = 0x00100000
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
STILL_ACTIVE = 259
INFINITE = 0xFFFFFFFF
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000
# A process started on purpose to outlive this one may still leave the job
# (CREATE_BREAKAWAY_FROM_JOB); without this, such a start fails.
JOB_OBJECT_LIMIT_BREAKAWAY_OK = 0x0800
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION = 9
# The exit status of a program ended because it did not stop within the grace.
EXIT_STUCK = 1


class _BasicLimits(ctypes.Structure):
    _fields_ = (
        ("PerProcessUserTimeLimit", ctypes.c_int64),
        ("PerJobUserTimeLimit", ctypes.c_int64),
        ("LimitFlags", ctypes.c_uint32),
        ("MinimumWorkingSetSize", ctypes.c_size_t),
        ("MaximumWorkingSetSize", ctypes.c_size_t),
        ("ActiveProcessLimit", ctypes.c_uint32),
        ("Affinity", ctypes.c_size_t),
        ("PriorityClass", ctypes.c_uint32),
        ("SchedulingClass", ctypes.c_uint32),
    )


class _ExtendedLimits(ctypes.Structure):
    _fields_ = (
        ("BasicLimitInformation", _BasicLimits),
        ("IoInfo", ctypes.c_uint64 * 6),
        ("ProcessMemoryLimit", ctypes.c_size_t),
        ("JobMemoryLimit", ctypes.c_size_t),
        ("PeakProcessMemoryUsed", ctypes.c_size_t),
        ("PeakJobMemoryUsed", ctypes.c_size_t),
    )


def kernel32() -> ctypes.CDLL:
    """kernel32 with the prototypes used here: handles are pointer-sized, and ctypes' default
    (a C int) would cut them, or refuse the current process's pseudo-handle."""
    if sys.platform != "win32":
        raise OSError("kernel32 is Windows'")
    from ctypes import wintypes  # noqa: PLC0415 (Windows only)

    library = ctypes.WinDLL("kernel32", use_last_error=True)
    handle, dword, pointer, boolean = (
        wintypes.HANDLE,
        wintypes.DWORD,
        ctypes.c_void_p,
        wintypes.BOOL,
    )
    prototypes: dict[str, tuple[type, list[type]]] = {
        "OpenProcess": (handle, [dword, boolean, dword]),
        "CloseHandle": (boolean, [handle]),
        "GetCurrentProcess": (handle, []),
        "GetExitCodeProcess": (boolean, [handle, pointer]),
        "GetProcessTimes": (boolean, [handle, pointer, pointer, pointer, pointer]),
        "WaitForSingleObject": (dword, [handle, dword]),
        "CreateJobObjectW": (handle, [pointer, wintypes.LPCWSTR]),
        "SetInformationJobObject": (boolean, [handle, ctypes.c_int, pointer, dword]),
        "AssignProcessToJobObject": (boolean, [handle, handle]),
    }
    for name, (result, arguments) in prototypes.items():
        function = getattr(library, name)
        function.restype = result
        function.argtypes = arguments
    return library


def _created(library: ctypes.CDLL, process: int) -> int | None:
    """The creation time of the process behind an open handle; None once it has exited."""
    status = ctypes.c_uint32()
    if not library.GetExitCodeProcess(process, ctypes.byref(status)):
        return None
    if status.value != STILL_ACTIVE:
        return None
    times = [ctypes.c_uint64() for _ in range(4)]  # FILETIMEs: creation, exit, kernel, user
    if not library.GetProcessTimes(process, *map(ctypes.byref, times)):
        return None
    return times[0].value


def creation_time(pid: int) -> int | None:
    """The creation time of a running process, or None: gone, or another user's now (not the
    process recorded, either way)."""
    library = kernel32()
    process = library.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not process:
        return None
    try:
        return _created(library, process)
    finally:
        library.CloseHandle(process)


def _join_kill_on_close_job(library: ctypes.CDLL) -> bool:
    """This process in a new kill-on-close job whose one handle it keeps, never closed by hand
    (see above); False when Windows refused, and nothing then ends with this process."""
    job = library.CreateJobObjectW(None, None)
    if not job:
        return False
    limits = _ExtendedLimits()
    limits.BasicLimitInformation.LimitFlags = (
        JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | JOB_OBJECT_LIMIT_BREAKAWAY_OK
    )
    size = ctypes.sizeof(limits)
    joined = bool(
        library.SetInformationJobObject(
            job, JOB_OBJECT_EXTENDED_LIMIT_INFORMATION, ctypes.byref(limits), size
        )
        and library.AssignProcessToJobObject(job, library.GetCurrentProcess())
    )
    if not joined:
        library.CloseHandle(job)  # a job this process is not in: closing it ends nothing
    return joined


def _watch(library: ctypes.CDLL, process: int, stop: Callable[[], None], grace: float) -> None:
    library.WaitForSingleObject(process, INFINITE)
    stop()
    time.sleep(grace)
    # Still running: stuck. Its job's handle closes as it exits, ending what it started.
    os._exit(EXIT_STUCK)


def follow_process(pid: int, stop: Callable[[], None], grace: float) -> bool:
    """When process `pid`, started before this one, ends: `stop()`, then, if this process still
    runs after `grace` seconds, its end. False when `pid` has ended already (nothing is set up)."""
    library = kernel32()
    own = creation_time(os.getpid())
    process = library.OpenProcess(SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not process:
        return False
    started = _created(library, process)
    if started is None or (own is not None and started > own):
        library.CloseHandle(process)
        return False
    _join_kill_on_close_job(library)
    watcher = threading.Thread(
        target=_watch, args=(library, process, stop, grace), name="bootloader", daemon=True
    )
    watcher.start()
    return True
