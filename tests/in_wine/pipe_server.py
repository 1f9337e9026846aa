"""Named-pipe servers for Windows tests: test peers of `open_named_pipe`, LocalAPI stand-ins.

Strategy: the server end is made the way Tailscale's daemon makes its pipe (byte mode, 256 KiB
buffers, one new instance per client), with ctypes: `CreateNamedPipeW` opened for overlapped
I/O and registered with trio's IOCP, then an overlapped `ConnectNamedPipe` waited for with
`trio.lowlevel.wait_overlapped`. A connected instance is wrapped in the product's own
`NamedPipeStream`, which works on either end of a pipe.

`NamedPipeListener` is a `trio.abc.Listener`, so `trio.serve_listeners` (or `serve_named_pipe`
below) serves a handler per connection, e.g. an HTTP LocalAPI stand-in for end-to-end tests.
The listener creates its first instance at construction, so clients can connect as soon as it
exists; later instances are created by `accept`, which is what makes "busy" states (every
instance connected, none listening) reproducible.

Windows only; imported by tests under an `if sys.platform == "win32":` guard.
"""

from __future__ import annotations

import ctypes
import sys
import uuid
from collections.abc import Awaitable, Callable
from ctypes import wintypes
from typing import Final, NoReturn

import trio

# The client module's own kernel32 declarations serve the server end too.
from tailscale_wsl2.net._windows_pipe import (
    _ERROR_NO_DATA,
    _FILE_FLAG_OVERLAPPED,
    _INVALID_HANDLE_VALUE,
    NamedPipeStream,
    _CancelIoEx,
    _CloseHandle,
    _kernel32,
)

if sys.platform != "win32":
    raise ImportError("pipe_server is Windows-only")

__all__ = ["NamedPipeListener", "serve_named_pipe", "unique_pipe_name"]

_PIPE_ACCESS_DUPLEX: Final = 0x00000003
_FILE_FLAG_FIRST_PIPE_INSTANCE: Final = 0x00080000
_PIPE_TYPE_BYTE: Final = 0x0
_PIPE_READMODE_BYTE: Final = 0x0
_PIPE_WAIT: Final = 0x0
_PIPE_UNLIMITED_INSTANCES: Final = 255

_ERROR_PIPE_CONNECTED: Final = 535
_ERROR_IO_PENDING: Final = 997

# Tailscale's LocalAPI pipe uses 256 KiB in each direction (safesocket/pipe_windows.go).
TAILSCALE_PIPE_BUFFER_SIZE: Final = 256 * 1024


class _Overlapped(ctypes.Structure):
    _fields_ = (
        ("Internal", ctypes.c_size_t),
        ("InternalHigh", ctypes.c_size_t),
        ("Offset", wintypes.DWORD),
        ("OffsetHigh", wintypes.DWORD),
        ("hEvent", wintypes.HANDLE),
    )


_CreateNamedPipeW = _kernel32.CreateNamedPipeW
_CreateNamedPipeW.argtypes = (
    wintypes.LPCWSTR,  # lpName
    wintypes.DWORD,  # dwOpenMode
    wintypes.DWORD,  # dwPipeMode
    wintypes.DWORD,  # nMaxInstances
    wintypes.DWORD,  # nOutBufferSize
    wintypes.DWORD,  # nInBufferSize
    wintypes.DWORD,  # nDefaultTimeOut
    wintypes.LPVOID,  # lpSecurityAttributes
)
_CreateNamedPipeW.restype = wintypes.HANDLE

_ConnectNamedPipe = _kernel32.ConnectNamedPipe
_ConnectNamedPipe.argtypes = (wintypes.HANDLE, ctypes.POINTER(_Overlapped))
_ConnectNamedPipe.restype = wintypes.BOOL

_DisconnectNamedPipe = _kernel32.DisconnectNamedPipe
_DisconnectNamedPipe.argtypes = (wintypes.HANDLE,)
_DisconnectNamedPipe.restype = wintypes.BOOL


def unique_pipe_name(purpose: str = "test") -> str:
    """A pipe name no other test (or test run) uses."""
    return rf"\\.\pipe\tailscale-wsl2-{purpose}-{uuid.uuid4().hex}"


class NamedPipeListener(trio.abc.Listener[NamedPipeStream]):
    """The server end of named pipe `name`: each `accept` returns one connected instance.

    Must be created inside `trio.run` (the instance is registered with trio's IOCP).
    """

    def __init__(
        self,
        name: str,
        *,
        max_instances: int = _PIPE_UNLIMITED_INSTANCES,
        buffer_size: int = TAILSCALE_PIPE_BUFFER_SIZE,
    ) -> None:
        self.name = name
        self._max_instances = max_instances
        self._buffer_size = buffer_size
        self._closed = False
        # FIRST_PIPE_INSTANCE: fail rather than join a pipe that someone else already serves.
        self._listening: int | None = self._create_instance(_FILE_FLAG_FIRST_PIPE_INSTANCE)

    def _create_instance(self, extra_open_flags: int = 0) -> int:
        handle: int | None = _CreateNamedPipeW(
            self.name,
            _PIPE_ACCESS_DUPLEX | _FILE_FLAG_OVERLAPPED | extra_open_flags,
            _PIPE_TYPE_BYTE | _PIPE_READMODE_BYTE | _PIPE_WAIT,
            self._max_instances,
            self._buffer_size,
            self._buffer_size,
            0,  # default time-out for WaitNamedPipeW(NMPWAIT_USE_DEFAULT_WAIT): 50 ms
            None,  # default security: this user has full access
        )
        if handle is None or handle == _INVALID_HANDLE_VALUE:
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            trio.lowlevel.register_with_iocp(handle)
        except BaseException:
            _CloseHandle(handle)
            raise
        return handle

    async def accept(self) -> NamedPipeStream:
        """Wait for a client on a listening instance (made now if there is none)."""
        if self._closed:
            raise trio.ClosedResourceError("listener is closed")
        if self._listening is None:
            self._listening = self._create_instance()
        handle = self._listening
        while not await self._connect(handle):
            # The client came and went before we saw it: reset the instance and listen again.
            _DisconnectNamedPipe(handle)
        self._listening = None
        return NamedPipeStream(handle, self.name)

    async def _connect(self, handle: int) -> bool:
        """Wait for a client on `handle`: True once connected, False if it already left."""
        overlapped = _Overlapped()  # must outlive the operation: held until the await ends
        if _ConnectNamedPipe(handle, ctypes.byref(overlapped)):
            # Completed at once: the completion still comes through the IOCP.
            await trio.lowlevel.wait_overlapped(handle, ctypes.addressof(overlapped))
            return True
        error = ctypes.get_last_error()
        if error == _ERROR_PIPE_CONNECTED:
            # The client connected between CreateNamedPipeW and now. This is a failure status
            # to the I/O manager, so no completion packet is queued: nothing to wait for.
            await trio.lowlevel.checkpoint()
            return True
        if error == _ERROR_NO_DATA:
            await trio.lowlevel.checkpoint()
            return False
        if error != _ERROR_IO_PENDING:
            raise ctypes.WinError(error)
        await trio.lowlevel.wait_overlapped(handle, ctypes.addressof(overlapped))
        return True

    async def aclose(self) -> None:
        """Close the listening instance; connected streams stay open."""
        self._closed = True
        if self._listening is not None:
            handle, self._listening = self._listening, None
            _CancelIoEx(handle, None)
            _CloseHandle(handle)
        await trio.lowlevel.checkpoint()


async def serve_named_pipe(
    handler: Callable[[NamedPipeStream], Awaitable[object]],
    name: str,
    *,
    task_status: trio.TaskStatus[NamedPipeListener] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve `handler` on pipe `name`, one task per client, until cancelled.

    Use as `listener = await nursery.start(serve_named_pipe, handler, name)`: the pipe exists
    once `start` returns.
    """
    listener = NamedPipeListener(name)
    task_status.started(listener)
    await trio.serve_listeners(handler, [listener])
