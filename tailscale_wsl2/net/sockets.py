"""Sockets for the hot path: ask the operating system first, trio only on EAGAIN.

trio's `SocketStream` passes through the scheduler twice on every call, even
when the kernel already has the data or the buffer space: once to see whether
it was cancelled and once more to yield. A relay's whole job is such calls,
and on a new connection they are most of its cost. These classes make the
non-blocking system call straight away and wait on trio
(`wait_readable` / `wait_writable`, which work on Linux and on Windows) only
when it reports that it would block. Cancellation still works: every wait is
a trio checkpoint, and a loop that never waits (a bulk copy) yields by itself
(see `pump.py`).

`RawSocketStream` implements trio's `HalfCloseableStream`, so the relay core
treats it like any other stream; `connect_socket` and `RawSocketListener`
produce them. OS errors become trio's `BrokenResourceError` (the peer is gone)
or `ClosedResourceError` (we closed it), as trio's own streams do.

Two Windows differences are settled here, for every connect and listener:

- A closed port on Windows, loopback included, is not refused at once: the stack
  sends the SYN again for about 2 s first. For a loopback connect (the Windows half
  to Tailscale's legacy port, doctor's probes) a refusal is final, so the socket is
  told not to retransmit its SYN (`SIO_TCP_INITIAL_RTO`, Windows 10 1709 and
  later), as libuv and Go's runtime do. Should the call fail, the connect only
  takes its 2 s as before.
- Listeners set no address option on Windows: see `listen_options`.
"""

import errno
import functools
import ipaddress
import os
import select
import socket
import struct
import sys
from collections.abc import Callable
from types import TracebackType

import trio

__all__ = [
    "COPY_CHUNK_SIZE",
    "FAIRNESS_BYTES",
    "NO_SYN_RETRANSMISSIONS",
    "PEER_GONE",
    "SIO_TCP_INITIAL_RTO",
    "PeerErrorsAsBroken",
    "RawSocketListener",
    "RawSocketStream",
    "connect_socket",
    "initial_rto_parameters",
    "listen_options",
    "listening_socket",
    "peer_closed_entirely",
    "send_all_when_ready",
    "send_now",
]

DEFAULT_RECEIVE_SIZE = 65536
# The pump's copy buffer: as much as a busy socket hands over at once. A Unix
# socket's send buffer is asked for as much, so that one such chunk fits.
COPY_CHUNK_SIZE = 256 * 1024
# Yield to other tasks after this many bytes moved without waiting, so one
# bulk transfer cannot starve every other connection.
FAIRNESS_BYTES = 4 * 1024 * 1024

# What a relayed connection ends with when its peer or socket is gone.
PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)

# accept() errors that concern only the connection being accepted (it was
# reset while it waited in the backlog): skip it and accept the next one.
ACCEPT_SKIPPABLE = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN}

# Sockets this relay connects are made non-blocking when created, where the
# system can (Linux): the Windows half opens one per client connection, and
# this spares it the ioctl that setblocking() makes.
CREATED_NON_BLOCKING = getattr(socket, "SOCK_NONBLOCK", 0)

# Windows (mstcpip.h): the control code _WSAIOW(IOC_VENDOR, 17), and its input, a
# TCP_INITIAL_RTO_PARAMETERS: USHORT Rtt (0xFFFF: unspecified, keep the system's), UCHAR
# MaxSynRetransmissions (0xFE: TCP_INITIAL_RTO_NO_SYN_RETRANSMISSIONS), one byte of padding.
SIO_TCP_INITIAL_RTO = 0x98000011
NO_SYN_RETRANSMISSIONS = 0xFE
_UNSPECIFIED_RTT = 0xFFFF


def initial_rto_parameters(host: str) -> bytes | None:
    """The SIO_TCP_INITIAL_RTO input that makes a connect to `host` fail at its first refusal,
    or None to keep Windows' retries (a host that is not loopback may just be slow to answer)."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        return None
    if not loopback:
        return None
    return struct.pack("<HBx", _UNSPECIFIED_RTT, NO_SYN_RETRANSMISSIONS)


@functools.cache
def _wsaioctl() -> Callable[..., int]:
    if sys.platform != "win32":
        raise OSError(errno.ENOSYS, "WSAIoctl exists only on Windows")
    import ctypes  # noqa: PLC0415 (Windows only, loaded at the first loopback connect)
    from ctypes import wintypes  # noqa: PLC0415

    function = ctypes.WinDLL("ws2_32").WSAIoctl
    function.argtypes = (
        ctypes.c_size_t,  # SOCKET s
        wintypes.DWORD,  # dwIoControlCode
        wintypes.LPVOID,  # lpvInBuffer
        wintypes.DWORD,  # cbInBuffer
        wintypes.LPVOID,  # lpvOutBuffer
        wintypes.DWORD,  # cbOutBuffer
        ctypes.POINTER(wintypes.DWORD),  # lpcbBytesReturned
        wintypes.LPVOID,  # lpOverlapped
        wintypes.LPVOID,  # lpCompletionRoutine
    )
    function.restype = ctypes.c_int
    return function


def _no_retries_here(sock: socket.socket, parameters: bytes) -> bool:
    """Give `parameters` to SIO_TCP_INITIAL_RTO on `sock`; whether Windows took them."""
    import ctypes  # noqa: PLC0415 (Windows only)
    from ctypes import wintypes  # noqa: PLC0415

    returned = wintypes.DWORD()
    status = _wsaioctl()(
        sock.fileno(),
        SIO_TCP_INITIAL_RTO,
        parameters,
        len(parameters),
        None,
        0,
        ctypes.byref(returned),
        None,
        None,
    )
    return status == 0


# How a socket about to connect to a host is told not to retransmit its SYN; None off
# Windows, where a closed port is refused at once anyway. A seam: tests watch the calls.
GiveUpAtOnce = Callable[[socket.socket, bytes], bool]
give_up_at_once: GiveUpAtOnce | None = _no_retries_here if sys.platform == "win32" else None


class PeerErrorsAsBroken:
    """OS errors on `sock` as trio's: closed by us, or broken by the peer.

    A class rather than a @contextmanager generator: it wraps several calls
    per connection, and this way costs half as many Python calls.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock

    def __enter__(self) -> None:
        pass

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, OSError):
            if self._socket.fileno() == -1:
                raise trio.ClosedResourceError("the socket was closed") from exc
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc


def peer_closed_entirely(sock: socket.socket) -> bool:
    """Whether the peer of `sock`, whose EOF was just read, closed its whole connection.

    A peer that only shut its sending side may still read an answer; one that
    closed never will. Linux tells them apart on a Unix socket (POLLHUP comes
    only once both directions are shut); on TCP, and on Windows, an EOF is
    always taken for a half-close, the safe reading.
    """
    if sys.platform == "win32":
        return False
    poller = select.poll()
    poller.register(sock, select.POLLIN)  # POLLHUP is reported whatever is asked for
    return any(events & select.POLLHUP for _, events in poller.poll(0))


def send_now(sock: socket.socket, data: bytes | bytearray | memoryview) -> int:
    """Send what `sock` takes without waiting; how many bytes that was (0: it is full)."""
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0


async def send_all_when_ready(sock: socket.socket, data: bytes | bytearray | memoryview) -> None:
    """Send all of `data`, trying first and waiting on trio only while `sock` is full."""
    sent = send_now(sock, data)
    if sent < len(data):  # the socket was full: rare, so no memoryview until now
        with memoryview(data) as rest:
            while sent < len(rest):
                await trio.lowlevel.wait_writable(sock)
                try:
                    sent += sock.send(rest[sent:])
                except BlockingIOError:
                    pass


class RawSocketStream(trio.abc.HalfCloseableStream):
    """A connected non-blocking stdlib socket as a trio stream."""

    def __init__(self, sock: socket.socket) -> None:
        if sock.getblocking():  # accepted sockets are; connected ones are already not
            sock.setblocking(False)
        family = sock.family
        if family in (socket.AF_INET, socket.AF_INET6):
            # Requests and answers are small and latency-bound: no Nagle.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        elif sys.platform != "win32" and family == socket.AF_UNIX:
            # Linux's default (wmem_default, 208 KiB) takes a 256 KiB chunk of
            # the pump's in two sends and a wait; asking for 256 KiB gets twice
            # that (the kernel doubles it, within wmem_max, 208 KiB by default).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, COPY_CHUNK_SIZE)
        self.socket = sock

    def fileno(self) -> int:
        return self.socket.fileno()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        with PeerErrorsAsBroken(self.socket):
            while True:
                try:
                    return self.socket.recv(max_bytes or DEFAULT_RECEIVE_SIZE)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(self.socket)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with PeerErrorsAsBroken(self.socket):
            await send_all_when_ready(self.socket, data)

    async def wait_send_all_might_not_block(self) -> None:
        with PeerErrorsAsBroken(self.socket):
            await trio.lowlevel.wait_writable(self.socket)

    async def send_eof(self) -> None:
        with PeerErrorsAsBroken(self.socket):
            self.socket.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        if self.socket.fileno() != -1:
            trio.lowlevel.notify_closing(self.socket)
            self.socket.close()

    async def aclose(self) -> None:
        # Closing never blocks, and a relay closes two streams per connection:
        # no trip through the scheduler here (trio's convention asks for one).
        self.close()


async def _connect(sock: socket.socket, address: str | tuple[str, int], timeout: float) -> int:
    """Connect `sock`; return 0 or the errno the connect failed with.

    Raises trio.TooSlowError after `timeout` seconds of waiting. A connect on
    this machine (a Unix socket, loopback) is done or refused at once, so the
    deadline, which costs a cancel scope, is set only when there is a wait.
    """
    if sock.getblocking():
        sock.setblocking(False)
    error = sock.connect_ex(address)
    if error not in (errno.EAGAIN, errno.EINPROGRESS, errno.EWOULDBLOCK):
        return error
    with trio.fail_after(timeout):
        while error == errno.EAGAIN:
            # A Unix socket whose listener's backlog is full: try again soon.
            await trio.sleep(0.001)
            error = sock.connect_ex(address)
        if error in (errno.EINPROGRESS, errno.EWOULDBLOCK):
            await trio.lowlevel.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return error


async def connect_socket(
    family: int, address: str | tuple[str, int], *, timeout: float
) -> RawSocketStream:
    """Connect a new socket, waiting on trio only while the connect is in progress
    (at most `timeout` seconds, then trio.TooSlowError)."""
    sock = socket.socket(family, socket.SOCK_STREAM | CREATED_NON_BLOCKING)
    try:
        if give_up_at_once is not None and isinstance(address, tuple):
            parameters = initial_rto_parameters(address[0])
            if parameters is not None:
                # Its failure costs only the retries' 2 s: nothing to report.
                give_up_at_once(sock, parameters)
        error = await _connect(sock, address, timeout)
    except BaseException:
        sock.close()
        raise
    if error:
        sock.close()
        raise OSError(error, os.strerror(error))  # OSError picks the subclass by errno
    return RawSocketStream(sock)


def listen_options(platform: str) -> list[tuple[int, int, int]]:
    """The socket options (level, name, value) a TCP listener sets before binding on `platform`.

    The listener must bind again at once after a restart, or after the vEthernet (WSL) adapter
    came back at the same address while links accepted before are still open, and a second
    `up` must still fail with "port in use".

    - Linux: SO_REUSEADDR, which lets a bind pass the old connections in TIME_WAIT and still
      refuses a second listener.
    - Windows: none. Microsoft documents that a port bound with SO_EXCLUSIVEADDRUSE cannot be
      bound again until every connection accepted on it is inactive, so a quick restart (or a
      rebind while links linger) would fail as "in use"; and Windows' SO_REUSEADDR lets a
      second socket bind the very same port, so a second `up` would not fail and connections
      would go to either. With no option, Windows' default (enhanced socket security, Windows
      Server 2003 and later) already refuses a second bind, and lets only the same user's
      sockets bind over it with SO_REUSEADDR.
    """
    if platform == "win32":
        return []
    return [(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)]


def listening_socket(family: int, address: str | tuple[str, int], backlog: int) -> socket.socket:
    """A bound, listening socket that no other listener can share the port of."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family in (socket.AF_INET, socket.AF_INET6):
            for level, name, value in listen_options(sys.platform):
                sock.setsockopt(level, name, value)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class RawSocketListener(trio.abc.Listener[RawSocketStream]):
    """Accept connections on a listening stdlib socket, trying accept() first."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.socket = sock

    async def accept(self) -> RawSocketStream:
        while True:
            try:
                connection, _ = self.socket.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.socket)
            except OSError as exc:
                if self.socket.fileno() == -1:
                    raise trio.ClosedResourceError("the listener was closed") from exc
                if exc.errno not in ACCEPT_SKIPPABLE:
                    raise
            else:
                return RawSocketStream(connection)

    async def aclose(self) -> None:
        if self.socket.fileno() != -1:
            trio.lowlevel.notify_closing(self.socket)
            self.socket.close()
        await trio.lowlevel.checkpoint()
