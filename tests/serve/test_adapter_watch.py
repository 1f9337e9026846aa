"""Following the vEthernet (WSL) adapter: the polling loop on a mock clock, and the listener
swap under a live relay (real sockets on loopback addresses standing in for WSL subnets)."""

import logging
import socket
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.net.endpoints import Discovered, TcpEndpoint
from tailscale_wsl2.net.listeners import open_tcp_listener
from tailscale_wsl2.net.sockets import connect_socket
from tailscale_wsl2.relay.core import Relay
from tailscale_wsl2.serve.adapter_watch import POLL_INTERVAL, RebindingListener, follow_wsl_adapter
from tailscale_wsl2.windows.ipconfig import AdapterAddress, WslAdapter

ETHERNET = AdapterAddress("Ethernet", "192.168.1.20", 24)
FIRST = AdapterAddress("vEthernet (WSL)", "172.27.64.1", 20)
MOVED = AdapterAddress("vEthernet (WSL (Hyper-V firewall))", "172.22.16.1", 20)


def wsl(entry: AdapterAddress) -> WslAdapter:
    method = f"{entry.adapter} adapter in the adapter list"
    return WslAdapter(Discovered(entry.address, method), entry.network)


class Snapshots:
    """Adapter lists in turn, one per poll; the last one repeats."""

    def __init__(self, *snapshots: list[AdapterAddress]) -> None:
        self._snapshots: Iterator[list[AdapterAddress]] = iter(snapshots)
        self._last: list[AdapterAddress] = []

    def __call__(self) -> list[AdapterAddress]:
        self._last = next(self._snapshots, self._last)
        return self._last


async def follow(snapshots: Snapshots, polls: int, fail_binds: int = 0) -> list[str]:
    """Run the loop for `polls` polls; what bind and unbind were asked to do."""
    calls: list[str] = []

    async def bind(adapter: WslAdapter) -> None:
        await trio.lowlevel.checkpoint()
        if len([c for c in calls if c.startswith("refused")]) < fail_binds:
            calls.append(f"refused {adapter.found.address}")
            raise ActionableError("cannot listen on 172.27.64.1:41113: the port is in use")
        calls.append(f"bind {adapter.found.address} {adapter.network} ({adapter.found.method})")

    async def unbind() -> None:
        await trio.lowlevel.checkpoint()
        calls.append("unbind")

    with trio.move_on_after(POLL_INTERVAL * (polls - 0.5)):
        await follow_wsl_adapter(snapshots, bind, unbind)
    return calls


async def test_absent_then_present_then_moved(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tailscale_wsl2.serve.adapter_watch")
    snapshots = Snapshots([ETHERNET], [ETHERNET], [ETHERNET, FIRST], [FIRST], [MOVED, ETHERNET])
    assert await follow(snapshots, polls=6) == [
        "bind 172.27.64.1 172.27.64.0/20 (vEthernet (WSL) adapter in the adapter list)",
        "bind 172.22.16.1 172.22.16.0/20 "
        "(vEthernet (WSL (Hyper-V firewall)) adapter in the adapter list)",
    ]
    assert [record.getMessage() for record in caplog.records] == [
        "waiting for the vEthernet (WSL) adapter: WSL has not started since Windows booted "
        "(open a WSL shell, or run `wsl true`)",
        "the WSL adapter moved: 172.27.64.1 on 172.27.64.0/20 -> 172.22.16.1 on 172.22.16.0/20",
    ]


async def test_gone_then_back_unbinds_and_binds_again(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tailscale_wsl2.serve.adapter_watch")
    snapshots = Snapshots([FIRST], [], [], [FIRST])
    calls = await follow(snapshots, polls=5)
    assert [call.split(" (")[0] for call in calls] == [
        "bind 172.27.64.1 172.27.64.0/20",
        "unbind",
        "bind 172.27.64.1 172.27.64.0/20",
    ]
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == "the vEthernet (WSL) adapter is gone (172.27.64.1 on 172.27.64.0/20)"
    assert messages[1].startswith("waiting for the vEthernet (WSL) adapter")
    assert len(messages) == 2


async def test_a_failed_bind_is_retried_each_poll_and_logged_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tailscale_wsl2.serve.adapter_watch")
    calls = await follow(Snapshots([FIRST]), polls=4, fail_binds=3)
    assert [call.split(" (")[0] for call in calls] == [
        *["refused 172.27.64.1"] * 3,
        "bind 172.27.64.1 172.27.64.0/20",
    ]
    assert [record.getMessage() for record in caplog.records] == [
        "cannot listen on the WSL adapter (retrying): "
        "cannot listen on 172.27.64.1:41113: the port is in use"
    ]


async def test_polls_at_the_interval(autojump_clock: trio.testing.MockClock) -> None:
    polled_at: list[float] = []

    def snapshot() -> list[AdapterAddress]:
        polled_at.append(trio.current_time())
        return []

    await follow(snapshot, polls=3)  # type: ignore[arg-type]
    assert polled_at == [0.0, POLL_INTERVAL, 2 * POLL_INTERVAL]


# --- RebindingListener under a relay ----------------------------------------------------------


async def echo_upstream() -> trio.abc.Stream:
    left, right = trio.testing.memory_stream_pair()

    async def echo() -> None:
        async for chunk in right:
            await right.send_all(chunk)

    trio.lowlevel.spawn_system_task(echo)
    await trio.lowlevel.checkpoint()
    return left


async def exchange(stream: trio.abc.Stream, data: bytes) -> bytes | bytearray:
    await stream.send_all(data)
    return await stream.receive_some()


async def connect(host: str, port: int) -> trio.abc.Stream:
    return await connect_socket(socket.AF_INET, (host, port), timeout=5)


async def test_rebinding_keeps_relayed_connections_and_moves_new_ones() -> None:
    listener = RebindingListener()
    relay = Relay.for_clients(echo_upstream, grace_period=0.1)
    first = open_tcp_listener(TcpEndpoint("127.0.0.2", 0))
    port = first.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.serve, [listener])
        await listener.replace(first)
        old = await connect("127.0.0.2", port)
        assert await exchange(old, b"before") == b"before"

        await listener.replace(open_tcp_listener(TcpEndpoint("127.0.0.3", port)))
        with pytest.raises(ConnectionRefusedError):
            await connect("127.0.0.2", port)
        new = await connect("127.0.0.3", port)
        assert await exchange(new, b"after") == b"after"
        assert await exchange(old, b"still relayed") == b"still relayed"

        await listener.replace(None)  # the adapter went away
        with pytest.raises(ConnectionRefusedError):
            await connect("127.0.0.3", port)
        assert await exchange(new, b"both live") == b"both live"
        await old.aclose()
        await new.aclose()
        relay.stop_accepting()


async def test_accept_waits_for_a_listener_and_close_ends_it() -> None:
    listener = RebindingListener()
    async with trio.open_nursery() as nursery:

        async def accept_once() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await listener.accept()

        nursery.start_soon(accept_once)
        await trio.testing.wait_all_tasks_blocked()
        await listener.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()
