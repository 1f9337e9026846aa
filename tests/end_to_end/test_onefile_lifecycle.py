"""The frozen binary's two processes, stopped and killed the way users and service managers do.

A one-file program is a bootloader and its child, the program. Killing the started process (the
bootloader) must end the program, which removes its socket and its extraction directory; a pair
killed together leaves a directory that the next start removes; and no start may remove a
directory whose bootloader is still alive, even once its program has exited (that race made
bootloaders print "Failed to remove temporary directory"). Every run gets its own temporary
directory (TMPDIR), so what is left there is this test's doing.
"""

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from tests.support.chain import FROZEN_BINARY, wait_until
from tests.support.ci import require
from tests.support.procstats import children, process_state
from tests.support.sockets import free_tcp_port

pytestmark = pytest.mark.frozen

# The figure: what ten kills of the started process leave behind.
KILLS = 10
# Generous bounds for a loaded 2-core machine; a relay that outlives them is an orphan.
ENDS_WITHIN = 15.0


@dataclass
class FrozenRun:
    """One run of the frozen WSL2 half: the bootloader that was started, its socket, its
    temporary directory and its stderr."""

    bootloader: subprocess.Popen[bytes]
    socket: Path
    tmp: Path
    log: Path
    program_pid: int | None = None

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def ended(self) -> bool:
        return self.bootloader.poll() is not None

    def program(self) -> int:
        """The bootloader's one child: the program itself."""
        wait_until(lambda: bool(children(self.bootloader.pid)), self.ended, self.stderr, "it")
        [self.program_pid] = children(self.bootloader.pid)
        return self.program_pid

    def serving(self) -> None:
        wait_until(self.socket.exists, self.ended, self.stderr, "the WSL2 half")

    def wait(self) -> str:
        """Its stderr, once the bootloader has ended."""
        self.bootloader.wait(ENDS_WITHIN)
        return self.stderr()

    def extraction_dirs(self) -> list[Path]:
        return sorted(self.tmp.glob("_MEI*"))


def _ended(pid: int) -> bool:
    return process_state(pid) in ("gone", "Z")


def _runs_the_frozen_binary(pid: int) -> bool:
    # Checked before a kill: the pid may have gone to another process since.
    try:
        return Path(f"/proc/{pid}/exe").samefile(FROZEN_BINARY)
    except OSError:
        return False


def _eventually(condition: Callable[[], bool], what: str) -> None:
    wait_until(condition, lambda: False, lambda: "", what, timeout=ENDS_WITHIN)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[], FrozenRun]]:
    """Start runs of the frozen WSL2 half, each in a session of its own; all ended afterwards."""
    require(FROZEN_BINARY.exists(), f"no frozen binary at {FROZEN_BINARY}: run `make build`")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    runs: list[FrozenRun] = []

    def started() -> FrozenRun:
        socket = tmp_path / f"s{len(runs)}.sock"
        log = tmp_path / f"run{len(runs)}.log"
        argv = [str(FROZEN_BINARY), "up", "--side", "wsl", "--host-ip", "127.0.0.1"]
        argv += ["--port", str(free_tcp_port()), "--insecure-no-auth", "--socket", str(socket)]
        with log.open("wb") as stderr:
            popen = subprocess.Popen(
                argv,
                env={**os.environ, "TMPDIR": str(tmp)},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        run = FrozenRun(popen, socket, tmp, log)
        runs.append(run)
        return run

    yield started
    for run in runs:
        programs = [*children(run.bootloader.pid), run.program_pid]
        run.bootloader.kill()
        run.bootloader.wait()
        for pid in programs:  # an orphan the test failed on: not left running
            if pid is not None and not _ended(pid) and _runs_the_frozen_binary(pid):
                os.kill(pid, signal.SIGKILL)


def start_once_more(tmp: Path) -> None:
    """A short run in the same temporary directory: its start-up removes dead runs' leftovers."""
    subprocess.run(
        [str(FROZEN_BINARY), "--version"],
        env={**os.environ, "TMPDIR": str(tmp)},
        capture_output=True,
        check=True,
        timeout=60,
    )


def test_sigkill_of_the_started_process_ends_the_relay_and_leaves_nothing(
    start: Callable[[], FrozenRun],
) -> None:
    for _ in range(KILLS):
        run = start()
        run.serving()
        program = run.program()
        run.bootloader.kill()
        stderr = run.wait()
        # The program drains on the parent-death signal, removes its socket and its directory.
        _eventually(partial(_ended, program), "the relay to end (no orphan)")
        assert not run.socket.exists(), "the socket was left behind"
        assert "Failed to remove" not in stderr, stderr
    # Each program removed its own directory: no later start was needed.
    assert run.extraction_dirs() == []


def test_a_bootloader_killed_during_start_up_takes_its_program_along(
    start: Callable[[], FrozenRun],
) -> None:
    run = start()
    program = run.program()  # killed as soon as its program exists, long before it serves
    run.bootloader.kill()
    run.wait()
    _eventually(lambda: _ended(program), "the program to end with its bootloader")
    start_once_more(run.tmp)
    assert run.extraction_dirs() == []


def test_a_later_start_removes_what_a_pair_killed_together_left(
    start: Callable[[], FrozenRun],
) -> None:
    run = start()
    run.serving()
    program = run.program()
    os.killpg(run.bootloader.pid, signal.SIGKILL)  # a service manager's last resort
    run.wait()
    _eventually(lambda: _ended(program), "the program to die")
    [left] = run.extraction_dirs()  # nobody was left to remove it
    start_once_more(run.tmp)
    assert not left.exists()


def test_a_start_never_removes_a_directory_whose_bootloader_lives(
    start: Callable[[], FrozenRun],
) -> None:
    # The race, held still: the program has exited, and its bootloader, which removes the
    # directory next, is stopped just before doing so. A start now must leave the directory.
    run = start()
    run.serving()
    program = run.program()
    run.bootloader.send_signal(signal.SIGSTOP)
    os.kill(program, signal.SIGTERM)
    _eventually(lambda: process_state(program) == "Z", "the program to exit")
    [owned] = run.extraction_dirs()
    start_once_more(run.tmp)
    assert owned.exists(), "a start removed a live bootloader's directory"
    run.bootloader.send_signal(signal.SIGCONT)
    stderr = run.wait()
    assert "Failed to remove" not in stderr, stderr
    assert not owned.exists()  # its bootloader removed it, as it should


@pytest.mark.parametrize(
    ("sig", "to_group"),
    [
        pytest.param(signal.SIGTERM, False, id="SIGTERM to the started process"),
        pytest.param(signal.SIGTERM, True, id="service stop: SIGTERM to every process"),
        pytest.param(signal.SIGINT, True, id="Ctrl+C: SIGINT to the process group"),
    ],
)
def test_a_stop_drains_and_removes_the_socket_and_the_directory(
    start: Callable[[], FrozenRun], sig: int, to_group: bool
) -> None:
    run = start()
    run.serving()
    if to_group:
        os.killpg(run.bootloader.pid, sig)
    else:
        run.bootloader.send_signal(sig)
    stderr = run.wait()
    assert "received: shutting down" in stderr, stderr
    # Sent to every process, the signal reaches the program twice: directly, and forwarded by
    # the bootloader. The second, still pending once the relay has stopped, then ends the
    # program as that signal does (trio delivers it again when its receiver closes).
    assert run.bootloader.returncode in (0, -sig), stderr
    assert "Traceback" not in stderr, stderr
    assert "Failed to remove" not in stderr, stderr
    assert not run.socket.exists()
    assert run.extraction_dirs() == []
