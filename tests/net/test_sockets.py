"""The Windows choices in sockets.py, decided on Linux through their seams: which connects are
told to give up at their first refusal (and with which bytes), and which options a listener
sets. Their effect on Windows itself is shown by tests/in_wine and the Windows CI job."""

import socket
import struct
import sys

import pytest

from tailscale_wsl2.net import sockets
from tailscale_wsl2.net.sockets import (
    NO_SYN_RETRANSMISSIONS,
    SIO_TCP_INITIAL_RTO,
    connect_socket,
    initial_rto_parameters,
    listen_options,
    listening_socket,
)
from tests.support.sockets import free_tcp_port


def test_the_control_code_is_wsaiow_ioc_vendor_17() -> None:
    ioc_in, ioc_vendor = 0x80000000, 0x18000000
    assert ioc_in | ioc_vendor | 17 == SIO_TCP_INITIAL_RTO


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1"])
def test_loopback_connects_ask_for_no_syn_retransmissions(host: str) -> None:
    parameters = initial_rto_parameters(host)
    assert parameters is not None
    # TCP_INITIAL_RTO_PARAMETERS: USHORT Rtt, UCHAR MaxSynRetransmissions, and padding to 4.
    assert len(parameters) == 4
    rtt, retransmissions = struct.unpack_from("<HB", parameters)
    assert rtt == 0xFFFF  # unspecified: the system's own
    assert retransmissions == NO_SYN_RETRANSMISSIONS == 0xFE


@pytest.mark.parametrize("host", ["172.27.64.1", "192.168.1.10", "fe80::1", "not an address"])
def test_other_hosts_keep_windows_retries(host: str) -> None:
    # A host across a network may answer late; only loopback's refusal is final.
    assert initial_rto_parameters(host) is None


async def test_a_loopback_connect_is_told_before_it_connects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    told: list[tuple[bool, bytes]] = []

    def record(sock: socket.socket, parameters: bytes) -> bool:
        # Told before connecting: the socket has no peer yet.
        with pytest.raises(OSError, match="not connected"):
            sock.getpeername()
        told.append((sock.fileno() != -1, parameters))
        return False  # as when Windows refuses the call: the connect goes on regardless

    monkeypatch.setattr(sockets, "give_up_at_once", record)
    with pytest.raises(ConnectionRefusedError):
        await connect_socket(socket.AF_INET, ("127.0.0.1", free_tcp_port()), timeout=5)
    assert told == [(True, initial_rto_parameters("127.0.0.1"))]


async def test_a_failing_call_does_not_fail_the_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(sock: socket.socket, parameters: bytes) -> bool:
        return False

    monkeypatch.setattr(sockets, "give_up_at_once", refuse)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        stream = await connect_socket(socket.AF_INET, server.getsockname(), timeout=5)
        stream.close()


def test_nothing_is_told_off_windows() -> None:
    # Linux refuses a closed port at once by itself.
    assert sockets.give_up_at_once is None


def test_windows_listeners_set_no_address_option() -> None:
    # Not SO_EXCLUSIVEADDRUSE (a restart could not bind while old connections linger), not
    # SO_REUSEADDR (a second listener could share the port).
    assert listen_options("win32") == []


def test_linux_listeners_pass_time_wait() -> None:
    assert listen_options("linux") == [(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)]


def test_a_listener_binds_again_while_a_connection_it_accepted_lingers() -> None:
    # What a restart, or the adapter coming back at the same address, needs.
    first = listening_socket(socket.AF_INET, ("127.0.0.1", 0), 8)
    address = first.getsockname()
    client = socket.create_connection(address)
    first.setblocking(True)
    accepted, _ = first.accept()
    first.close()
    second = listening_socket(socket.AF_INET, address, 8)
    try:
        with pytest.raises(OSError, match="in use"):  # and a second listener is still refused
            listening_socket(socket.AF_INET, address, 8)
    finally:
        for sock in (second, accepted, client):
            sock.close()


def test_a_windows_listener_is_bound_with_no_option_set(monkeypatch: pytest.MonkeyPatch) -> None:
    options: list[tuple[object, ...]] = []
    real_setsockopt = socket.socket.setsockopt

    def spy(sock: socket.socket, *args: object) -> None:
        options.append(args)
        real_setsockopt(sock, *args)  # type: ignore[call-overload]

    monkeypatch.setattr(socket.socket, "setsockopt", spy)
    monkeypatch.setattr(sys, "platform", "win32")
    listening_socket(socket.AF_INET, ("127.0.0.1", 0), 8).close()
    assert options == []
