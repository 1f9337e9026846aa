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
instance connected, none listening) reproducible. It can give the pipe tailscaled's security
descriptor (`TAILSCALED_SDDL`).

Who the client is: `client_identity` reads it as tailscaled does, once the client has written
something (Windows lets a server impersonate only after a read): the client's process id
(`GetNamedPipeClientProcessId`), then, impersonating it (`ImpersonateNamedPipeClient`), the
thread token's impersonation level and user SID. A client that connected at the Anonymous
level has no token to open (`OpenThreadToken` fails): `identified` refuses it, as tailscaled
refuses such clients. Wine 8 implements these calls but ignores the level a client asks for
(it reports Impersonation for every client); real Windows reports what was asked.

Windows only; imported by tests under an `if sys.platform == "win32":` guard.
"""

from __future__ import annotations

import ctypes
import enum
import sys
import uuid
from collections.abc import Awaitable, Callable
from ctypes import wintypes
from dataclasses import dataclass
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

__all__ = [
    "TAILSCALED_SDDL",
    "AnonymousClient",
    "ClientIdentity",
    "ImpersonationLevel",
    "NamedPipeListener",
    "client_identity",
    "identified",
    "open_pipe_at_level",
    "serve_named_pipe",
    "unique_pipe_name",
]

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

# The security descriptor tailscaled gives its pipe (safesocket/pipe_windows.go): owner and
# group Builtin Administrators, and read/write for Builtin Users and SYSTEM, not inherited.
TAILSCALED_SDDL: Final = "O:BAG:BAD:PAI(A;OICI;GWGR;;;BU)(A;OICI;GWGR;;;SY)"

_SDDL_REVISION_1: Final = 1
_TOKEN_QUERY: Final = 0x0008
_TOKEN_USER: Final = 1  # TOKEN_INFORMATION_CLASS TokenUser
_TOKEN_IMPERSONATION_LEVEL: Final = 9  # ...TokenImpersonationLevel
_SECURITY_SQOS_PRESENT: Final = 0x00100000
_GENERIC_READ_WRITE: Final = 0xC0000000
_OPEN_EXISTING: Final = 3


class ImpersonationLevel(enum.IntEnum):
    """SECURITY_IMPERSONATION_LEVEL."""

    ANONYMOUS = 0
    IDENTIFICATION = 1
    IMPERSONATION = 2
    DELEGATION = 3


@dataclass(frozen=True)
class ClientIdentity:
    """Who is at the other end of a pipe, as the server learns it."""

    pid: int
    level: ImpersonationLevel
    user_sid: str


class AnonymousClient(PermissionError):
    """The client connected at the Anonymous level: the server cannot tell who it is."""


class _SecurityAttributes(ctypes.Structure):
    _fields_ = (
        ("nLength", wintypes.DWORD),
        ("lpSecurityDescriptor", wintypes.LPVOID),
        ("bInheritHandle", wintypes.BOOL),
    )


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

_advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)

_ConvertStringSecurityDescriptorToSecurityDescriptorW = (
    _advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW
)
_ConvertStringSecurityDescriptorToSecurityDescriptorW.argtypes = (
    wintypes.LPCWSTR,
    wintypes.DWORD,
    ctypes.POINTER(wintypes.LPVOID),
    ctypes.POINTER(wintypes.ULONG),
)
_ConvertStringSecurityDescriptorToSecurityDescriptorW.restype = wintypes.BOOL

_LocalFree = _kernel32.LocalFree
_LocalFree.argtypes = (wintypes.LPVOID,)
_LocalFree.restype = wintypes.LPVOID

_GetNamedPipeClientProcessId = _kernel32.GetNamedPipeClientProcessId
_GetNamedPipeClientProcessId.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.ULONG))
_GetNamedPipeClientProcessId.restype = wintypes.BOOL

_GetCurrentThread = _kernel32.GetCurrentThread
_GetCurrentThread.argtypes = ()
_GetCurrentThread.restype = wintypes.HANDLE

_ImpersonateNamedPipeClient = _advapi32.ImpersonateNamedPipeClient
_ImpersonateNamedPipeClient.argtypes = (wintypes.HANDLE,)
_ImpersonateNamedPipeClient.restype = wintypes.BOOL

_RevertToSelf = _advapi32.RevertToSelf
_RevertToSelf.argtypes = ()
_RevertToSelf.restype = wintypes.BOOL

_OpenThreadToken = _advapi32.OpenThreadToken
_OpenThreadToken.argtypes = (
    wintypes.HANDLE,
    wintypes.DWORD,
    wintypes.BOOL,
    ctypes.POINTER(wintypes.HANDLE),
)
_OpenThreadToken.restype = wintypes.BOOL

_GetTokenInformation = _advapi32.GetTokenInformation
_GetTokenInformation.argtypes = (
    wintypes.HANDLE,
    ctypes.c_int,
    wintypes.LPVOID,
    wintypes.DWORD,
    ctypes.POINTER(wintypes.DWORD),
)
_GetTokenInformation.restype = wintypes.BOOL

_ConvertSidToStringSidW = _advapi32.ConvertSidToStringSidW
_ConvertSidToStringSidW.argtypes = (wintypes.LPVOID, ctypes.POINTER(wintypes.LPWSTR))
_ConvertSidToStringSidW.restype = wintypes.BOOL

_CreateFileW = _kernel32.CreateFileW
_CreateFileW.argtypes = (
    wintypes.LPCWSTR,
    wintypes.DWORD,
    wintypes.DWORD,
    wintypes.LPVOID,
    wintypes.DWORD,
    wintypes.DWORD,
    wintypes.HANDLE,
)
_CreateFileW.restype = wintypes.HANDLE


def _check(succeeded: object) -> None:
    if not succeeded:
        raise ctypes.WinError(ctypes.get_last_error())


def _token_user_sid(token: int) -> str:
    buffer = ctypes.create_string_buffer(256)  # TOKEN_USER: a SID pointer, then the SID
    size = wintypes.DWORD()
    _check(_GetTokenInformation(token, _TOKEN_USER, buffer, len(buffer), ctypes.byref(size)))
    sid = ctypes.cast(buffer, ctypes.POINTER(wintypes.LPVOID))[0]
    text = wintypes.LPWSTR()
    _check(_ConvertSidToStringSidW(sid, ctypes.byref(text)))
    try:
        return text.value or ""
    finally:
        _LocalFree(text)


def _token_identity(token: int) -> tuple[ImpersonationLevel, str]:
    level = wintypes.DWORD()
    size = wintypes.DWORD()
    _check(
        _GetTokenInformation(
            token, _TOKEN_IMPERSONATION_LEVEL, ctypes.byref(level), 4, ctypes.byref(size)
        )
    )
    return ImpersonationLevel(level.value), _token_user_sid(token)


def _impersonated_identity(handle: int) -> tuple[ImpersonationLevel, str]:
    _check(_ImpersonateNamedPipeClient(handle))
    try:
        token = wintypes.HANDLE()
        # OpenAsSelf: open the token with this process's rights, not the client's.
        if not _OpenThreadToken(_GetCurrentThread(), _TOKEN_QUERY, True, ctypes.byref(token)):
            # ERROR_CANT_OPEN_ANONYMOUS: an Anonymous client leaves no token to read.
            raise AnonymousClient(0, "the client gave no identity", None, ctypes.get_last_error())
        try:
            return _token_identity(token.value or 0)
        finally:
            _CloseHandle(token)
    finally:
        # This thread runs trio: it must never stay as the client.
        _check(_RevertToSelf())


def client_identity(stream: NamedPipeStream) -> ClientIdentity:
    """Who the client of a server-end `stream` is (call once the client has written)."""
    handle = stream._open_handle()
    pid = wintypes.ULONG()
    _check(_GetNamedPipeClientProcessId(handle, ctypes.byref(pid)))
    level, sid = _impersonated_identity(handle)
    if level is ImpersonationLevel.ANONYMOUS:
        raise AnonymousClient(0, "the client connected at the Anonymous level")
    return ClientIdentity(pid.value, level, sid)


class _Replayed(trio.abc.Stream):
    """`stream` with `first` put back in front of what it receives."""

    def __init__(self, stream: NamedPipeStream, first: bytes) -> None:
        self._stream = stream
        self._first = first

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._first:
            size = len(self._first) if max_bytes is None else max_bytes
            chunk, self._first = self._first[:size], self._first[size:]
            await trio.lowlevel.checkpoint()
            return chunk
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


Identified = Callable[[trio.abc.Stream, ClientIdentity], Awaitable[object]]


def identified(handler: Identified) -> Callable[[NamedPipeStream], Awaitable[None]]:
    """A pipe handler that first learns who the client is, as tailscaled does, and closes the
    pipe unanswered when it cannot (an Anonymous client); `handler` gets the stream (first
    bytes included) and the identity."""

    async def handle(stream: NamedPipeStream) -> None:
        async with stream:
            first = await stream.receive_some()
            if not first:
                return
            try:
                identity = client_identity(stream)
            except AnonymousClient:
                return
            await handler(_Replayed(stream, first), identity)

    return handle


def open_pipe_at_level(name: str, level: ImpersonationLevel) -> NamedPipeStream:
    """A client end of pipe `name` that asks for impersonation `level` (to play other clients
    than the product's `open_named_pipe`)."""
    flags = _FILE_FLAG_OVERLAPPED | _SECURITY_SQOS_PRESENT | (level << 16)
    handle = _CreateFileW(name, _GENERIC_READ_WRITE, 0, None, _OPEN_EXISTING, flags, None)
    if handle is None or handle == _INVALID_HANDLE_VALUE:
        raise ctypes.WinError(ctypes.get_last_error())
    trio.lowlevel.register_with_iocp(handle)
    return NamedPipeStream(handle, name)


class _SecurityDescriptor:
    """A security descriptor from SDDL, for CreateNamedPipeW, freed on close."""

    def __init__(self, sddl: str) -> None:
        pointer = wintypes.LPVOID()
        _check(
            _ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl, _SDDL_REVISION_1, ctypes.byref(pointer), None
            )
        )
        self.attributes = _SecurityAttributes(
            ctypes.sizeof(_SecurityAttributes), pointer.value, False
        )

    def close(self) -> None:
        if self.attributes.lpSecurityDescriptor:
            _LocalFree(self.attributes.lpSecurityDescriptor)
            self.attributes.lpSecurityDescriptor = None


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
        sddl: str | None = None,
    ) -> None:
        """`sddl`: the pipe's security descriptor (e.g. `TAILSCALED_SDDL`); None: the default,
        full access for this user."""
        self.name = name
        self._max_instances = max_instances
        self._buffer_size = buffer_size
        self._security = _SecurityDescriptor(sddl) if sddl else None
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
            ctypes.byref(self._security.attributes) if self._security else None,
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
        if self._security is not None:
            self._security.close()
        await trio.lowlevel.checkpoint()


async def serve_named_pipe(
    handler: Callable[[NamedPipeStream], Awaitable[object]],
    name: str,
    *,
    sddl: str | None = None,
    task_status: trio.TaskStatus[NamedPipeListener] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve `handler` on pipe `name`, one task per client, until cancelled.

    Use as `listener = await nursery.start(serve_named_pipe, handler, name)`: the pipe exists
    once `start` returns.
    """
    listener = NamedPipeListener(name, sddl=sddl)
    task_status.started(listener)
    await trio.serve_listeners(handler, [listener])
