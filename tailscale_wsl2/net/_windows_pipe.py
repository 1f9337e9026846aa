"""A trio stream over a Windows named-pipe client: the Windows half's link to Tailscale's LocalAPI.

Current Tailscale serves its LocalAPI on a named pipe (`facts.LOCALAPI_PIPE_NAME`), so the
Windows half relays each TCP connection from WSL2 to one client connection of that pipe.

Strategy: plain Win32 through ctypes with explicit argtypes (not trio's private cffi
bindings), and trio's public IOCP primitives for the I/O itself: the pipe is opened with
`CreateFileW(..., FILE_FLAG_OVERLAPPED)`, registered with `trio.lowlevel.register_with_iocp`,
and read and written with `readinto_overlapped` / `write_overlapped`, so a pipe costs no thread.
Only `WaitNamedPipeW`, which blocks, runs in a worker thread.

- Impersonation: the daemon impersonates each pipe client to learn who it is (its token's
  user, and its process) and refuses a client at the Anonymous level. The handle is opened
  with `SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION`, as Tailscale's own client opens it:
  the daemon may read our token's identity, but cannot act as us (without the flags Windows
  would grant the Impersonation level, more than the daemon needs). Wine ignores these flags
  and reports Impersonation whatever is asked; the Windows CI job checks the level.
- Errors: a missing pipe raises `PipeNotFoundError` (a `FileNotFoundError` naming the pipe:
  for the LocalAPI pipe it means Tailscale is not running on Windows, and the relay should
  answer 502). A pipe whose instances are all in use is waited for with `WaitNamedPipeW`, up to
  `busy_timeout`, then `PipeBusyError`. Once connected, the peer going away (ERROR_BROKEN_PIPE,
  ERROR_NO_DATA, ERROR_PIPE_NOT_CONNECTED) is end-of-file for `receive_some` and
  `trio.BrokenResourceError` for `send_all`, as on a socket.
- Closing: `aclose` cancels the handle's pending I/O and closes it. A read or write that
  another task has in flight then ends with `trio.ClosedResourceError`; one cancelled through
  a cancel scope ends with `trio.Cancelled` once Windows has confirmed the cancellation, so the
  kernel never writes into a buffer Python has let go.
- Half-close: a named pipe has no half-close (no `shutdown(SHUT_WR)`), so this is a plain
  `trio.abc.Stream`, not a `HalfCloseableStream`. When the `tailscale` CLI half-closes its end of
  the relay, the relay must NOT close the pipe: it stops writing to it and keeps copying the
  daemon's answer back until the daemon closes the pipe (end-of-file here). The CLI's HTTP
  requests are framed by Content-Length or chunked encoding, so the daemon knows where a
  request ends without seeing an end-of-file.
- Reads: the client end of a pipe reads in byte mode whatever the server's pipe type, so
  ERROR_MORE_DATA cannot occur. Each stream reuses one receive buffer; `receive_some` returns
  a `bytes` copy of what was read.

Windows only: importing this module elsewhere raises ImportError (and mypy checks it only
with `--platform win32`).
"""

from __future__ import annotations

import ctypes
import errno
import math
import sys
from ctypes import wintypes
from types import TracebackType
from typing import Final, final

import trio

if sys.platform != "win32":
    raise ImportError("tailscale_wsl2.net._windows_pipe is Windows-only")

__all__ = [
    "RECEIVE_BUFFER_SIZE",
    "NamedPipeStream",
    "PipeBusyError",
    "PipeNotFoundError",
    "open_named_pipe",
]


# What one receive_some reads at most when not told less: the size of each stream's buffer.
RECEIVE_BUFFER_SIZE: Final = 65536

_GENERIC_READ: Final = 0x80000000
_GENERIC_WRITE: Final = 0x40000000
_OPEN_EXISTING: Final = 3
_FILE_FLAG_OVERLAPPED: Final = 0x40000000
# winbase.h: the security quality of service is given, and it is SecurityIdentification (1)
# shifted into place.
_SECURITY_SQOS_PRESENT: Final = 0x00100000
_SECURITY_IDENTIFICATION: Final = 0x00010000
# Overlapped I/O (IOCP), and the least impersonation level that lets the daemon identify us.
_CLIENT_FLAGS: Final = _FILE_FLAG_OVERLAPPED | _SECURITY_SQOS_PRESENT | _SECURITY_IDENTIFICATION
_INVALID_HANDLE_VALUE: Final = ctypes.c_void_p(-1).value

_ERROR_FILE_NOT_FOUND: Final = 2
_ERROR_PATH_NOT_FOUND: Final = 3
_ERROR_BROKEN_PIPE: Final = 109
_ERROR_SEM_TIMEOUT: Final = 121
_ERROR_PIPE_BUSY: Final = 231
_ERROR_NO_DATA: Final = 232
_ERROR_PIPE_NOT_CONNECTED: Final = 233

# The errors with which Windows reports that the other end of a connected pipe is gone.
_PEER_GONE_ERRORS: Final = frozenset(
    {_ERROR_BROKEN_PIPE, _ERROR_NO_DATA, _ERROR_PIPE_NOT_CONNECTED}
)

_kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)

_CreateFileW = _kernel32.CreateFileW
_CreateFileW.argtypes = (
    wintypes.LPCWSTR,  # lpFileName
    wintypes.DWORD,  # dwDesiredAccess
    wintypes.DWORD,  # dwShareMode
    wintypes.LPVOID,  # lpSecurityAttributes
    wintypes.DWORD,  # dwCreationDisposition
    wintypes.DWORD,  # dwFlagsAndAttributes
    wintypes.HANDLE,  # hTemplateFile
)
_CreateFileW.restype = wintypes.HANDLE

_WaitNamedPipeW = _kernel32.WaitNamedPipeW
_WaitNamedPipeW.argtypes = (wintypes.LPCWSTR, wintypes.DWORD)
_WaitNamedPipeW.restype = wintypes.BOOL

_CancelIoEx = _kernel32.CancelIoEx
_CancelIoEx.argtypes = (wintypes.HANDLE, wintypes.LPVOID)
_CancelIoEx.restype = wintypes.BOOL

_CloseHandle = _kernel32.CloseHandle
_CloseHandle.argtypes = (wintypes.HANDLE,)
_CloseHandle.restype = wintypes.BOOL


class PipeNotFoundError(FileNotFoundError):
    """No named pipe `pipe_name` exists (for the LocalAPI pipe: Tailscale is not running)."""

    def __init__(self, pipe_name: str) -> None:
        super().__init__(errno.ENOENT, "named pipe does not exist", pipe_name)
        self.pipe_name = pipe_name

    def __str__(self) -> str:
        return f"named pipe {self.pipe_name} does not exist"


class PipeBusyError(TimeoutError):
    """Every instance of the named pipe stayed in use for `waited` seconds."""

    def __init__(self, pipe_name: str, waited: float) -> None:
        super().__init__(
            f"named pipe {pipe_name} stayed busy for {waited:g} s (all its instances in use)"
        )
        self.pipe_name = pipe_name
        self.waited = waited


def _windows_error(code: int, pipe_name: str) -> OSError:
    # OSError maps the Windows code to errno and picks the subclass (PermissionError, ...).
    return OSError(0, ctypes.FormatError(code), pipe_name, code)


def _create_file(pipe_name: str) -> tuple[int | None, int]:
    """Open the client end: (handle, 0) on success, else (None, Windows error code)."""
    handle: int | None = _CreateFileW(
        pipe_name,
        _GENERIC_READ | _GENERIC_WRITE,
        0,  # no sharing
        None,  # default security attributes
        _OPEN_EXISTING,
        _CLIENT_FLAGS,  # see "Impersonation" above
        None,
    )
    if handle is None or handle == _INVALID_HANDLE_VALUE:
        return None, ctypes.get_last_error()
    return handle, 0


def _wait_named_pipe(pipe_name: str, timeout: float) -> int:
    """Block until an instance of the pipe is free: 0, or the Windows error code (in a thread)."""
    # 0 would mean "the server's default time-out", so wait at least a millisecond.
    timeout_ms = max(1, math.ceil(timeout * 1000))
    if _WaitNamedPipeW(pipe_name, timeout_ms):
        return 0
    return ctypes.get_last_error()


def _close_handle(handle: int) -> None:
    if not _CloseHandle(handle):
        raise ctypes.WinError(ctypes.get_last_error())


class _ConflictGuard:
    """Raises trio.BusyResourceError when two tasks use the same direction at once."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._held = False

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(f"another task is already {self._what} this pipe")
        self._held = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._held = False


@final
class NamedPipeStream(trio.abc.Stream):
    """A connected named pipe as a trio stream (no half-close: see the module header).

    Normally made by `open_named_pipe`. The constructor takes ownership of `handle`, a pipe
    handle opened for overlapped I/O and already registered with
    `trio.lowlevel.register_with_iocp` (either end of a pipe works; tests build servers so).
    """

    def __init__(
        self, handle: int, pipe_name: str, *, receive_buffer_size: int = RECEIVE_BUFFER_SIZE
    ) -> None:
        if receive_buffer_size < 1:
            raise ValueError("receive_buffer_size must be at least 1")
        self._handle: int | None = handle
        self._pipe_name = pipe_name
        self._receive_buffer = bytearray(receive_buffer_size)
        self._send_guard = _ConflictGuard("sending on")
        self._receive_guard = _ConflictGuard("receiving from")

    @property
    def pipe_name(self) -> str:
        return self._pipe_name

    @property
    def closed(self) -> bool:
        return self._handle is None

    def _open_handle(self) -> int:
        if self._handle is None:
            raise trio.ClosedResourceError(f"named pipe {self._pipe_name} is closed")
        return self._handle

    def _raise_if_closed(self) -> None:
        """After an I/O error: if another task closed the pipe meanwhile, say that instead."""
        if self._handle is None:
            raise trio.ClosedResourceError(f"another task closed named pipe {self._pipe_name}")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with self._send_guard:
            handle = self._open_handle()
            with memoryview(data) as view, view.cast("B") as octets:
                if not octets:
                    await trio.lowlevel.checkpoint()
                    return
                sent = 0
                while sent < len(octets):
                    try:
                        written = await trio.lowlevel.write_overlapped(handle, octets[sent:])
                    except OSError as exc:
                        self._raise_if_closed()
                        if exc.winerror in _PEER_GONE_ERRORS:
                            raise trio.BrokenResourceError(
                                f"the other end of named pipe {self._pipe_name} is closed"
                            ) from exc
                        raise
                    if written <= 0:
                        # An overlapped pipe write completes in full or fails; this guards
                        # against looping forever should it ever do neither.
                        raise trio.BrokenResourceError(
                            f"named pipe {self._pipe_name} accepted no bytes"
                        )
                    sent += written

    async def wait_send_all_might_not_block(self) -> None:
        with self._send_guard:
            self._open_handle()
            # A pipe gives no cheap "writable" signal; a write simply waits in the kernel.
            await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        with self._receive_guard:
            if max_bytes is None:
                size = len(self._receive_buffer)
            elif max_bytes < 1:
                raise ValueError("max_bytes must be at least 1")
            else:
                size = min(max_bytes, len(self._receive_buffer))
            handle = self._open_handle()
            with memoryview(self._receive_buffer)[:size] as window:
                try:
                    count = await trio.lowlevel.readinto_overlapped(handle, window)
                except OSError as exc:
                    self._raise_if_closed()
                    if exc.winerror in _PEER_GONE_ERRORS:
                        # readinto_overlapped raised rather than returned, so it may not
                        # have checkpointed; a trio receive must.
                        await trio.lowlevel.checkpoint()
                        return b""
                    raise
                return bytes(window[:count])

    def close(self) -> None:
        """Close the pipe now; tasks with I/O in flight get trio.ClosedResourceError."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        # Cancel first so pending reads and writes complete (as aborted) whatever the Windows
        # flavour does about I/O pending on a handle being closed. Failure only means that
        # nothing was pending.
        _CancelIoEx(handle, None)
        _close_handle(handle)

    async def aclose(self) -> None:
        # Close before the checkpoint: a cancelled aclose must still close.
        self.close()
        await trio.lowlevel.checkpoint()


async def open_named_pipe(name: str, *, busy_timeout: float = 2.0) -> NamedPipeStream:
    r"""Connect to the named pipe `name` (e.g. `\\.\pipe\tailscaled`) as a client.

    Raises PipeNotFoundError when no such pipe exists, PipeBusyError when every instance stays
    in use for `busy_timeout` seconds, and OSError for anything else (PermissionError when the
    pipe's security descriptor refuses this user).
    """
    await trio.lowlevel.checkpoint()
    deadline = trio.current_time() + busy_timeout
    while True:
        handle, error = _create_file(name)
        if handle is not None:
            break
        if error in (_ERROR_FILE_NOT_FOUND, _ERROR_PATH_NOT_FOUND):
            raise PipeNotFoundError(name)
        if error != _ERROR_PIPE_BUSY:
            raise _windows_error(error, name)
        remaining = deadline - trio.current_time()
        if remaining <= 0:
            raise PipeBusyError(name, busy_timeout)
        # WaitNamedPipeW cannot be cancelled; it is bounded by `remaining`, so an abandoned
        # thread ends by itself.
        wait_error = await trio.to_thread.run_sync(
            _wait_named_pipe, name, remaining, abandon_on_cancel=True
        )
        # Success, a time-out or a pipe that vanished meanwhile: CreateFileW and the deadline
        # above decide what happens next.
        if wait_error not in (0, _ERROR_SEM_TIMEOUT, _ERROR_FILE_NOT_FOUND):
            raise _windows_error(wait_error, name)
    try:
        trio.lowlevel.register_with_iocp(handle)
    except BaseException:
        _close_handle(handle)
        raise
    return NamedPipeStream(handle, name)
