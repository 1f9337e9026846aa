"""The state file a running half keeps for `status`: where it is, what it says, when it changes."""

import logging
import os
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from tailscale_wsl2.net.connect import Hop
from tailscale_wsl2.net.endpoints import TcpEndpoint
from tailscale_wsl2.plan.commands import link_fixes
from tailscale_wsl2.plan.halves import Discoverers, Options, WslHalf, plan_half
from tailscale_wsl2.serve.halves import run_half
from tailscale_wsl2.serve.state import (
    HopHealth,
    RunState,
    StateReporter,
    initial_state,
    is_running,
    process_start_token,
    read_state,
    state_path,
    state_paths_to_read,
    write_state,
)
from tailscale_wsl2.windows.localapi import LocalApiAuto
from tailscale_wsl2.wsl.side import Side
from tests.support.sockets import free_tcp_port

STATE = RunState(
    half="wsl",
    pid=4242,
    process_start="linux:123456",
    executable="/usr/local/bin/tailscale-wsl2",
    version="0.1.0",
    started="2026-12-03T10:00:00Z",
    arguments=("up", "--key-file", "/mnt/c/Users/alice/AppData/Local/tailscale-wsl2/link.key"),
    listening="/var/run/tailscale/tailscaled.sock",
    relaying_to="the Windows half of tailscale-wsl2 at 172.27.64.1:41113",
    next_hop=HopHealth("reachable", "", "2026-12-03T10:00:01Z"),
)


def test_a_state_reads_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "state-wsl.json"
    write_state(path, STATE)
    assert read_state(path) == STATE


@pytest.mark.parametrize(
    "text",
    ["", "{}", "[1]", '{"schema": 2}', STATE.to_json().replace('"pid"', '"process"')],
)
def test_a_file_that_is_not_a_state_is_refused_as_such(tmp_path: Path, text: str) -> None:
    path = tmp_path / "state-wsl.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"not a state file|unknown schema"):
        read_state(path)


def test_no_file_is_no_state(tmp_path: Path) -> None:
    assert read_state(tmp_path / "state-wsl.json") is None


def test_writing_replaces_the_file_whole_readable_by_everyone(tmp_path: Path) -> None:
    path = tmp_path / "run" / "state-wsl.json"
    write_state(path, STATE)
    write_state(path, replace(STATE, pid=1))
    assert read_state(path) == replace(STATE, pid=1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [entry.name for entry in path.parent.iterdir()] == ["state-wsl.json"]


@pytest.mark.parametrize(
    ("platform", "environ", "euid", "expected"),
    [
        ("linux", {}, 0, "/run/tailscale-wsl2/state-wsl.json"),
        (
            "linux",
            {"XDG_RUNTIME_DIR": "/run/user/1000"},
            1000,
            "/run/user/1000/tailscale-wsl2/state-wsl.json",
        ),
        ("linux", {}, 1000, None),  # no place of its own: no state
        ("linux", {"TAILSCALE_WSL2_STATE_DIR": "/tmp/t"}, 0, "/tmp/t/state-wsl.json"),
        (
            "win32",
            {"LOCALAPPDATA": "C:/Users/alice/AppData/Local"},
            None,
            "C:/Users/alice/AppData/Local/tailscale-wsl2/state-wsl.json",
        ),
        ("win32", {}, None, None),
    ],
)
def test_where_a_half_keeps_its_state(
    platform: str, environ: dict[str, str], euid: int | None, expected: str | None
) -> None:
    path = state_path("wsl", platform=platform, environ=environ, euid=euid)
    assert (str(path) if path else None) == expected


def test_status_as_a_user_looks_at_its_own_state_then_at_the_service_s() -> None:
    paths = state_paths_to_read(
        "wsl", platform="linux", environ={"XDG_RUNTIME_DIR": "/run/user/1000"}, euid=1000
    )
    assert [str(path) for path in paths] == [
        "/run/user/1000/tailscale-wsl2/state-wsl.json",
        "/run/tailscale-wsl2/state-wsl.json",
    ]
    assert [str(p) for p in state_paths_to_read("wsl", platform="linux", environ={}, euid=0)] == [
        "/run/tailscale-wsl2/state-wsl.json"
    ]


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_this_process_runs_and_an_exited_one_does_not() -> None:
    assert is_running(initial_state("wsl"))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    token = process_start_token(child.pid)
    child.wait()
    assert token is not None
    assert process_start_token(child.pid) is None
    assert not is_running(replace(STATE, pid=child.pid, process_start=token))


def test_a_reused_process_id_is_not_the_process_that_wrote_the_state() -> None:
    # Same pid, another start time: the half was killed and the id given to another process.
    state = replace(STATE, pid=os.getpid(), process_start="linux:1")
    assert not is_running(state, start_token_of=lambda pid: "linux:999")
    assert is_running(state, start_token_of=lambda pid: "linux:1")


class CountingWriter:
    def __init__(self, error: OSError | None = None) -> None:
        self.written: list[RunState] = []
        self.error = error

    def __call__(self, path: Path, state: RunState) -> None:
        if self.error:
            raise self.error
        self.written.append(state)


def test_the_file_is_written_only_when_something_changed() -> None:
    writer = CountingWriter()
    reporter = StateReporter(Path("/x/state-wsl.json"), STATE, writer)
    reporter.update(listening=STATE.listening)  # no change
    reporter.next_hop_reachable()  # reachable already
    assert writer.written == []
    reporter.next_hop_unreachable("down (connection refused)")
    reporter.next_hop_unreachable("down (connection refused)")
    reporter.next_hop_unreachable("down (no route to host)")
    reporter.next_hop_reachable()
    assert [state.next_hop.health for state in writer.written] == [
        "unreachable",
        "unreachable",
        "reachable",
    ]
    assert writer.written[1].next_hop.detail == "down (no route to host)"


def test_a_state_that_cannot_be_written_is_said_once_and_costs_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reporter = StateReporter(
        Path("/run/tailscale-wsl2/state-wsl.json"), STATE, CountingWriter(PermissionError(13, "x"))
    )
    reporter.update(listening="/a")
    reporter.update(listening="/b")
    assert reporter.state.listening == "/b"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "`status` will not see this half" in warnings[0]


async def test_a_running_half_reports_where_it_listens_its_next_hop_and_removes_it(
    tmp_path: Path,
) -> None:
    port = free_tcp_port()  # nothing listens there: the next hop is down
    half = WslHalf(
        socket=tmp_path / "tailscaled.sock",
        socket_mode=0o660,
        socket_group=None,
        upstream=Hop(TcpEndpoint("127.0.0.1", port), "the Windows half", "start it"),
        upstream_found_by="--host-ip",
        key_file=None,
        fixes=link_fixes(
            Options(host_ip="127.0.0.1", insecure_no_auth=True), sudo=False, distro=None
        ),
    )
    path = tmp_path / "run" / "state-wsl.json"
    reporter = StateReporter(path, initial_state("wsl", ("up", "--side", "wsl")))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_half(half, key=None, max_connections=4, report=reporter))
        with trio.fail_after(10):
            while (state := read_state(path)) is None or state.next_hop.health == "unknown":
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert state.listening == str(tmp_path / "tailscaled.sock")
    assert state.relaying_to == f"the Windows half at 127.0.0.1:{port}"
    assert state.arguments == ("up", "--side", "wsl")
    assert state.pid == os.getpid()
    assert state.next_hop.health == "unreachable"
    assert state.next_hop.detail == (
        f"the Windows half is not reachable at 127.0.0.1:{port} (connection refused); start it"
    )
    assert not path.exists()


async def test_a_windows_half_on_the_auto_upstream_reports_both_candidates(
    tmp_path: Path,
) -> None:
    def unused() -> Path:
        raise AssertionError("not looked up with --listen and --insecure-no-auth")

    options = Options(listen="127.0.0.1", port=free_tcp_port(), insecure_no_auth=True)
    discover = Discoverers(lambda: None, unused, unused, unused)  # type: ignore[arg-type]
    half = plan_half(options, Side.WINDOWS, discover, {})
    path = tmp_path / "state-windows.json"
    reporter = StateReporter(path, initial_state("windows", ("up",)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_half(half, key=None, max_connections=4, report=reporter))
        with trio.fail_after(10):
            while (state := read_state(path)) is None or state.listening is None:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert state.relaying_to == (f"Tailscale's LocalAPI: {LocalApiAuto()} (--upstream auto)")
