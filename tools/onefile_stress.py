"""Start many runs of a one-file build at once, kill some, and count what goes wrong.

A one-file program is a bootloader that extracts the bundle into a `_MEI...` directory and runs
the program as its child, then removes the directory when the child exits. Anything else that
removes such a directory while its bootloader still owns it makes the bootloader print
"Failed to remove temporary directory" on stderr: a race a test run sees only now and then. This
script makes it likely (runs start and end close together, as a test suite's do, while killed
runs leave directories behind) and counts, in a private temporary directory:

- `warnings`: stderr lines of any run with "Failed to remove";
- `orphans`: programs still running 10 s after their bootloader was killed with SIGKILL;
- `leftover`: `_MEI*` directories left once every run has ended and one more run has started.

Usage: python tools/onefile_stress.py BINARY [--rounds N] [--width N] [--kills N]
  --kills N: only the lifecycle figures: N times start the WSL2 half, SIGKILL the started
  process, count orphans, then count leftover directories.
"""

import argparse
import contextlib
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Tally", "kill_runs", "main", "stress_runs"]

ORPHAN_WAIT = 10.0
START_WAIT = 15.0


@dataclass
class Tally:
    """What went wrong, counted."""

    runs: int = 0
    warnings: list[str] = field(default_factory=list)
    orphans: int = 0
    leftover: int = 0


def _wait_for(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def _children(pid: int) -> list[int]:
    try:
        return [int(word) for word in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _serve_argv(binary: Path, work: Path, index: int) -> list[str]:
    socket_path = work / f"s{index}.sock"
    return [
        *(str(binary), "up", "--side", "wsl", "--host-ip", "127.0.0.1"),
        *("--insecure-no-auth", "--port", str(42000 + index % 1000), "--socket", str(socket_path)),
    ]


def _failing_argv(binary: Path, work: Path, index: int) -> list[str]:
    # What the test suite's bad-key-file cases run: the Windows half refusing an empty key file,
    # a run that starts and ends within half a second.
    return [
        *(str(binary), "up", "--side", "windows", "--port", str(43000 + index % 1000)),
        *("--key-file", str(work / "empty.key"), "--listen", "127.0.0.1"),
        *("--upstream", f"unix:{work / 'api.sock'}"),
    ]


def _warnings(popen: subprocess.Popen[bytes]) -> list[str]:
    _, err = popen.communicate()
    return [
        line for line in err.decode(errors="replace").splitlines() if "Failed to remove" in line
    ]


def stress_runs(binary: Path, work: Path, env: dict[str, str], rounds: int, width: int) -> Tally:
    """Short runs started one after another, `width` of them in flight at any time, so that one
    starts while another ends; every `width` of them, a serving run is started and killed with
    SIGKILL as soon as its program exists (the bootloader alone, or both at once, in turn)."""
    tally = Tally()
    (work / "empty.key").write_bytes(b"")
    in_flight: list[subprocess.Popen[bytes]] = []
    serving: list[subprocess.Popen[bytes]] = []
    programs: list[int] = []
    for index in range(rounds * width):
        in_flight.append(
            subprocess.Popen(
                _failing_argv(binary, work, index),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
        if index % width == 0:
            started = subprocess.Popen(
                _serve_argv(binary, work, index),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            _wait_for(lambda pid=started.pid: bool(_children(pid)), START_WAIT)
            programs += _children(started.pid)
            if index % (2 * width):
                os.killpg(started.pid, signal.SIGKILL)  # both at once: nobody left to clean up
            else:
                started.kill()
            serving.append(started)
        # `width` runs in flight: the next starts as soon as one ends, so starts and ends mix.
        while len(in_flight) >= width:
            time.sleep(0.05)
            for popen in [popen for popen in in_flight if popen.poll() is not None]:
                in_flight.remove(popen)
                tally.warnings += _warnings(popen)
                tally.runs += 1
    # The orphans first: each holds its serving run's stderr open.
    tally.orphans += _orphans(programs, binary)
    for popen in in_flight + serving:
        tally.warnings += _warnings(popen)
        tally.runs += 1
    return tally


def kill_runs(binary: Path, work: Path, env: dict[str, str], kills: int) -> Tally:
    """`kills` times: start the WSL2 half, SIGKILL the started process, see whether the program
    outlives it."""
    tally = Tally()
    for index in range(kills):
        started = subprocess.Popen(
            _serve_argv(binary, work, index),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        socket_path = work / f"s{index}.sock"
        _wait_for(socket_path.exists, START_WAIT)
        program = _children(started.pid)
        started.kill()
        tally.orphans += _orphans(program, binary)
        tally.warnings += _warnings(started)
        tally.runs += 1
    return tally


def _orphans(programs: list[int], binary: Path) -> int:
    # Any program still running well after its bootloader died is an orphan: count, then end it
    # (once sure the pid is still that program's).
    count = 0
    for pid in programs:
        if not _wait_for(lambda pid=pid: not _running(pid), ORPHAN_WAIT):
            count += 1
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/exe").samefile(binary):
                    os.kill(pid, signal.SIGKILL)
    return count


def _count_leftover(binary: Path, tmp: Path, env: dict[str, str]) -> int:
    # One more run, started after every other has ended: its start-up may clean up.
    subprocess.run([str(binary), "--version"], env=env, capture_output=True, check=True)
    return len(list(tmp.glob("_MEI*")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary", type=Path)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--kills", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onefile-stress-") as scratch:
        tmp, work = Path(scratch, "tmp"), Path(scratch, "work")
        tmp.mkdir()
        work.mkdir()
        env = {**os.environ, "TMPDIR": str(tmp)}
        binary = args.binary.resolve()
        if args.kills:
            tally = kill_runs(binary, work, env, args.kills)
        else:
            tally = stress_runs(binary, work, env, args.rounds, args.width)
        tally.leftover = _count_leftover(binary, tmp, env)
    print(
        f"runs={tally.runs} warnings={len(tally.warnings)} orphans={tally.orphans} "
        f"leftover={tally.leftover}"
    )
    for line in tally.warnings:
        print(f"  {line}")


if __name__ == "__main__":
    main()
