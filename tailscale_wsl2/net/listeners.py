"""The Windows half's TCP listener, with the failures users actually hit.

(The WSL2 half's Unix socket, which needs more care, is `unix_listener.py`.)
"""

import errno
import socket

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.net.endpoints import TcpEndpoint
from tailscale_wsl2.net.sockets import RawSocketListener, listening_socket

__all__ = ["BACKLOG", "open_tcp_listener"]

# Deep enough for a burst of `tailscale` commands each opening connections,
# and what socat's comparison chain is given in the benchmark too.
BACKLOG = 4096


def open_tcp_listener(endpoint: TcpEndpoint) -> RawSocketListener:
    family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
    try:
        sock = listening_socket(family, (endpoint.host, endpoint.port), BACKLOG)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ActionableError(
                f"cannot listen on {endpoint}: the port is in use by another program",
                "stop that program, or pick another port with --port on both sides",
            ) from exc
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ActionableError(
                f"cannot listen on {endpoint}: no network adapter has that address",
                "check the address with `ipconfig`, or omit --listen to discover it",
            ) from exc
        raise ActionableError(f"cannot listen on {endpoint}: {exc.strerror}") from exc
    return RawSocketListener(sock)
