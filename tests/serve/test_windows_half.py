"""The Windows half run for real on Linux: it waits for the WSL adapter, binds when it appears,
rebinds when it moves, and keeps the connections it relays meanwhile. Loopback addresses play
the adapter's; a TCP echo server plays the LocalAPI; a mock clock makes the polls instant."""

import logging
import socket
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from tailscale_wsl2.net.endpoints import TcpEndpoint
from tailscale_wsl2.net.sockets import connect_socket
from tailscale_wsl2.plan.halves import Discoverers, Options, plan_half
from tailscale_wsl2.serve.halves import WindowsLookups, run_half
from tailscale_wsl2.windows.ipconfig import AdapterAddress
from tailscale_wsl2.wsl.side import Side
from tests.support.sockets import free_tcp_port


def never() -> Path:
    raise AssertionError("not used with --insecure-no-auth")


async def echo(stream: trio.SocketStream) -> None:
    async with stream:
        async for chunk in stream:
            await stream.send_all(chunk)


async def talk(stream: trio.abc.Stream, data: bytes) -> bytes | bytearray:
    await stream.send_all(data)
    return await stream.receive_some()


async def connected(host: str, port: int) -> trio.abc.Stream:
    """A connection to host:port once something listens there (the half polls to bind)."""
    while True:
        try:
            return await connect_socket(socket.AF_INET, (host, port), timeout=5)
        except ConnectionRefusedError:
            await trio.sleep(0.5)


async def test_waits_binds_and_rebinds_without_dropping_connections(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    adapters: list[AdapterAddress] = []  # WSL has not started
    firewall_checks: list[object] = []

    def firewall_warning(port: int, subnet: object) -> None:
        firewall_checks.append(subnet)

    async with trio.open_nursery() as nursery:
        upstream = (await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1")))[0]
        upstream_port = upstream.socket.getsockname()[1]
        port = free_tcp_port("127.0.0.2")
        options = Options(
            port=port,
            upstream=TcpEndpoint("127.0.0.1", upstream_port),
            insecure_no_auth=True,
            wait_for_wsl=True,
        )
        discover = Discoverers(lambda: None, never, never, never)  # type: ignore[arg-type]
        half = plan_half(options, Side.WINDOWS, discover, {})
        lookups = WindowsLookups(
            list_adapters=lambda: list(adapters), firewall_warning=firewall_warning
        )
        nursery.start_soon(lambda: run_half(half, key=None, max_connections=8, windows=lookups))

        await trio.sleep(5)
        adapters[:] = [AdapterAddress("vEthernet (WSL)", "127.0.0.2", 8)]
        first = await connected("127.0.0.2", port)
        assert await talk(first, b"hello") == b"hello"

        adapters[:] = [AdapterAddress("vEthernet (WSL)", "127.0.0.3", 8)]  # WSL restarted
        second = await connected("127.0.0.3", port)
        assert await talk(second, b"moved") == b"moved"
        assert await talk(first, b"still here") == b"still here"
        with pytest.raises(ConnectionRefusedError):
            await connect_socket(socket.AF_INET, ("127.0.0.2", port), timeout=5)
        await first.aclose()
        await second.aclose()
        nursery.cancel_scope.cancel()

    messages = [record.getMessage() for record in caplog.records]
    assert messages[:2] == [
        f"relaying to Tailscale's LocalAPI on Windows at 127.0.0.1:{upstream_port}",
        f"WARNING: --insecure-no-auth: any program that can reach TCP port {port} may use this "
        "Windows user's Tailscale (log out, change settings, send files)",
    ]
    assert "waiting for the vEthernet (WSL) adapter" in messages[2]
    assert (
        f"listening on 127.0.0.2:{port} (vEthernet (WSL) adapter in the adapter list)" in messages
    )
    assert "the WSL adapter moved: 127.0.0.2 on 127.0.0.0/8 -> 127.0.0.3 on 127.0.0.0/8" in messages
    assert firewall_checks == []  # loopback needs no firewall rule


async def test_mirrored_listens_on_loopback_and_on_the_adapter_once_it_exists(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Mirrored networking is configured, and WSL falls back to NAT later: both ways in work.
    caplog.set_level(logging.INFO)
    adapters: list[AdapterAddress] = []

    async with trio.open_nursery() as nursery:
        upstream = (await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1")))[0]
        port = free_tcp_port("127.0.0.2")
        options = Options(
            port=port,
            upstream=TcpEndpoint("127.0.0.1", upstream.socket.getsockname()[1]),
            insecure_no_auth=True,
        )
        discover = Discoverers(
            lambda: None,
            never,  # type: ignore[arg-type]
            never,
            never,
            windows_networking_mode=lambda: ("mirrored", ".wslconfig [wsl2] networkingMode"),
        )
        half = plan_half(options, Side.WINDOWS, discover, {})
        lookups = WindowsLookups(
            list_adapters=lambda: list(adapters), firewall_warning=lambda port, subnet: None
        )
        nursery.start_soon(lambda: run_half(half, key=None, max_connections=8, windows=lookups))

        over_loopback = await connected("127.0.0.1", port)
        assert await talk(over_loopback, b"mirrored") == b"mirrored"
        await trio.sleep(5)
        adapters[:] = [AdapterAddress("vEthernet (WSL)", "127.0.0.2", 8)]  # fell back to NAT
        with trio.fail_after(60):  # a few polls; never binding is a failure, not a hang
            over_adapter = await connected("127.0.0.2", port)
        assert await talk(over_adapter, b"nat") == b"nat"
        assert await talk(over_loopback, b"both") == b"both"
        await over_loopback.aclose()
        await over_adapter.aclose()
        nursery.cancel_scope.cancel()

    messages = [record.getMessage() for record in caplog.records]
    assert (
        f"listening on 127.0.0.1:{port} (mirrored networking (.wslconfig [wsl2] networkingMode):"
        " WSL2 comes in on loopback)"
    ) in messages
    assert not any("waiting for the vEthernet (WSL) adapter" in line for line in messages)
    assert any(line.startswith("no vEthernet (WSL) adapter, as mirrored") for line in messages)
    assert (
        "mirrored networking is configured, yet the vEthernet (WSL) adapter exists: WSL fell "
        "back to NAT, and WSL2 comes in on the adapter"
    ) in messages
