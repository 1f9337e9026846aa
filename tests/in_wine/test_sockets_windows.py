"""sockets.py's Windows choices on a Windows socket stack (Wine here, Windows in CI).

- A loopback connect is told not to retransmit its SYN (SIO_TCP_INITIAL_RTO) through ctypes'
  WSAIoctl: the call must not break the connect whatever Windows answers. Wine 8 refuses a
  closed port at once anyway and does not implement the control code; the time a refusal
  takes on real Windows is measured by the Windows CI job (tests/windows_ci/e2e.py).
- A listener binds again while a connection it accepted is still open, as a restart (or the
  vEthernet adapter coming back at the same address) needs, and a second listener on the same
  port is still refused with the one-line "in use" error.
"""

from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform != "win32", reason="Windows only (run: tools/winpy -m pytest tests/in_wine)"
)

if sys.platform == "win32":
    from tailscale_wsl2.errors import ActionableError
    from tailscale_wsl2.net import sockets
    from tailscale_wsl2.net.endpoints import TcpEndpoint
    from tailscale_wsl2.net.listeners import open_tcp_listener
    from tailscale_wsl2.net.sockets import connect_socket, initial_rto_parameters
    from tests.in_wine.test_windows_half_wine import free_tcp_port
    from tests.in_wine.wine_main import running_under_wine

# Everything below is Windows-only: mypy checks it with --platform win32.
assert sys.platform == "win32" or not TYPE_CHECKING


def test_the_ioctl_is_called_for_real() -> None:
    assert sockets.give_up_at_once is not None
    parameters = initial_rto_parameters("127.0.0.1")
    assert parameters is not None
    with socket.socket() as sock:
        taken = sockets.give_up_at_once(sock, parameters)
    # Windows 10 1709 and later take it; Wine 8 does not implement the control code.
    assert taken is not running_under_wine()


async def test_a_closed_loopback_port_is_refused() -> None:
    with pytest.raises(ConnectionRefusedError):
        await connect_socket(socket.AF_INET, ("127.0.0.1", free_tcp_port()), timeout=5)


async def test_an_open_loopback_port_still_connects() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        stream = await connect_socket(socket.AF_INET, server.getsockname(), timeout=5)
        stream.close()


async def test_the_listener_binds_again_while_an_accepted_connection_lingers() -> None:
    endpoint = TcpEndpoint("127.0.0.1", free_tcp_port())
    first = open_tcp_listener(endpoint)
    client = socket.create_connection((endpoint.host, endpoint.port))
    accepted = await first.accept()
    await first.aclose()
    # With SO_EXCLUSIVEADDRUSE Windows refuses this until `accepted` is inactive.
    second = open_tcp_listener(endpoint)
    try:
        with pytest.raises(ActionableError, match="the port is in use by another program"):
            open_tcp_listener(endpoint)
    finally:
        await second.aclose()
        accepted.close()
        client.close()
