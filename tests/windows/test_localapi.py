"""`--upstream auto`: the named pipe when it exists, else the legacy TCP port, per connection.

The system is faked: `open_stream` plays a pipe and a port that come and go, so the choice,
its log lines (once per change) and the 502 line are checked on Linux. tests/in_wine runs the
same connector against real named pipes under Wine.
"""

import logging

import pytest
import trio
import trio.testing

from tailscale_wsl2.net.connect import UpstreamUnavailable
from tailscale_wsl2.net.endpoints import Endpoint, NamedPipeEndpoint, TcpEndpoint
from tailscale_wsl2.windows.localapi import (
    LEGACY_LOCALAPI,
    LOCALAPI_PIPE,
    AutoLocalApi,
    LocalApiAuto,
)

PIPE = NamedPipeEndpoint(r"\\.\pipe\test")
TCP = TcpEndpoint("127.0.0.1", 41112)
AUTO = LocalApiAuto(PIPE, TCP)


class FakeSystem:
    """What exists right now: each endpoint maps to None (there) or the error opening it."""

    def __init__(self, **state: BaseException | None) -> None:
        self.pipe = state.get("pipe", FileNotFoundError())
        self.tcp = state.get("tcp", ConnectionRefusedError())
        self.opened: list[Endpoint] = []

    async def open_stream(self, endpoint: Endpoint) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        error = self.pipe if endpoint == PIPE else self.tcp
        if error is not None:
            raise error
        self.opened.append(endpoint)
        return trio.testing.memory_stream_pair()[0]


def test_defaults_are_tailscales_places() -> None:
    assert LocalApiAuto() == LocalApiAuto(LOCALAPI_PIPE, LEGACY_LOCALAPI)
    assert LOCALAPI_PIPE.name == r"\\.\pipe\ProtectedPrefix\Administrators\Tailscale\tailscaled"
    assert str(LEGACY_LOCALAPI) == "127.0.0.1:41112"


async def test_the_pipe_when_it_exists() -> None:
    system = FakeSystem(pipe=None, tcp=None)
    await AutoLocalApi(AUTO, open_stream=system.open_stream)()
    assert system.opened == [PIPE]


async def test_the_legacy_port_when_there_is_no_pipe() -> None:
    system = FakeSystem(tcp=None)
    await AutoLocalApi(AUTO, open_stream=system.open_stream)()
    assert system.opened == [TCP]


async def test_neither_is_one_line_naming_both_and_the_fix() -> None:
    connect = AutoLocalApi(AUTO, open_stream=FakeSystem().open_stream)
    with pytest.raises(UpstreamUnavailable) as caught:
        await connect()
    assert str(caught.value) == (
        r"Tailscale is not running on Windows (no LocalAPI pipe \\.\pipe\test, nothing on "
        "127.0.0.1:41112); start Tailscale, then run `tailscale-wsl2 doctor`"
    )


async def test_a_pipe_that_exists_but_fails_is_not_mistaken_for_an_old_tailscale() -> None:
    system = FakeSystem(pipe=PermissionError(13, "Access is denied"), tcp=None)
    with pytest.raises(
        UpstreamUnavailable, match=r"named pipe .* is not usable \(Access is denied\)"
    ):
        await AutoLocalApi(AUTO, open_stream=system.open_stream)()
    assert system.opened == []


async def test_a_port_that_hangs_is_given_up_in_time() -> None:
    async def hang(endpoint: Endpoint) -> trio.abc.Stream:
        if endpoint == PIPE:
            raise FileNotFoundError
        await trio.sleep_forever()

    connect = AutoLocalApi(AUTO, open_stream=hang, timeout=0.05)
    with pytest.raises(UpstreamUnavailable, match=r"127\.0\.0\.1:41112: no answer in time"):
        await connect()


async def test_the_choice_follows_tailscale_and_is_logged_once_per_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "tailscale_wsl2.windows.localapi")
    system = FakeSystem(tcp=None)  # Tailscale 1.32
    connect = AutoLocalApi(AUTO, open_stream=system.open_stream)
    await connect.probe()
    await connect()
    system.tcp = ConnectionRefusedError()  # being upgraded
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable):
            await connect()
    system.pipe = None  # 1.34 is up
    await connect()
    await connect()
    assert system.opened == [TCP, TCP, PIPE, PIPE]
    # The failure in between is the relay's to log (once per change, with a count).
    assert [(r.levelname, r.getMessage().split(" (")[0]) for r in caplog.records] == [
        ("INFO", "relaying to Tailscale's LocalAPI on TCP 127.0.0.1:41112"),
        ("INFO", r"relaying to Tailscale's LocalAPI on named pipe \\.\pipe\test"),
    ]


async def test_a_probe_that_finds_nothing_says_so_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "tailscale_wsl2.windows.localapi")
    await AutoLocalApi(
        AUTO, open_stream=FakeSystem(tcp=ConnectionRefusedError()).open_stream
    ).probe()
    assert [(r.levelname, r.getMessage().split(" (")[0]) for r in caplog.records] == [
        ("WARNING", "Tailscale is not running on Windows"),
    ]


async def test_probe_closes_what_it_opened_and_never_raises() -> None:
    closed: list[bool] = []

    async def open_pipe(endpoint: Endpoint) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        stream = trio.testing.MemorySendStream(close_hook=lambda: closed.append(True))
        return trio.StapledStream(stream, trio.testing.MemoryReceiveStream())

    await AutoLocalApi(AUTO, open_stream=open_pipe).probe()
    assert closed == [True]
    await AutoLocalApi(AUTO, open_stream=FakeSystem().open_stream).probe()


async def test_off_windows_there_is_no_pipe_to_try() -> None:
    # `up --side windows` on Linux (tests, or a lab): the legacy port is still tried.
    auto = LocalApiAuto(PIPE, TcpEndpoint("127.0.0.1", 1))
    with pytest.raises(UpstreamUnavailable, match=r"^Tailscale is not running on Windows"):
        await AutoLocalApi(auto)()
