"""Every option and file input of every command, given the paths users type by mistake.

A folder, an empty file, a FIFO, a device, a symbolic link, a missing file, a name too long, a
name that is not UTF-8: each gets one line that says what to do, the documented exit status (1
for a failure, 2 for usage), and never a traceback without -v. Run as real processes, with the
package and the frozen binary (`program`), so nothing the framework does before our code runs
(typer's path checks) can hide.
"""

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.chain import start_process, wait_until
from tests.support.sockets import free_tcp_port

NON_UTF8 = os.fsdecode(b"key-\xff\xfe")  # a name as Linux hands over bytes that are no UTF-8
TIMEOUT = 30  # a FIFO must not block: anything near this is a hang


def run(program: list[str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*program, *args], capture_output=True, timeout=TIMEOUT, check=False, cwd=Path.cwd()
    )


def one_line(done: subprocess.CompletedProcess[bytes]) -> str:
    """The one stderr line of a failure; fails on a traceback or on more lines."""
    stderr = done.stderr.decode("utf-8", "backslashreplace")
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# Each bad key file: how to make it, and the words its one line must have.
KEY_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "a folder": (lambda d: _mkdir(d / "keys"), "is a folder, not the link key file"),
    "empty": (lambda d: _write(d / "link.key", b""), "is empty"),
    "a FIFO": (lambda d: _fifo(d / "link.key"), "is a named pipe (FIFO), not a link key file"),
    "a device": (lambda d: Path("/dev/zero"), "is a character device, not a link key file"),
    "huge": (lambda d: _write(d / "link.key", b"0" * 100_000), "holds 100000 bytes"),
    "a symbolic link": (lambda d: _symlink(d / "link.key"), "is a symbolic link (to "),
    "damaged": (lambda d: _write(d / "link.key", b"not hex\n"), "is damaged"),
    "under a file": (lambda d: _write(d / "f", b"") / "link.key", "Not a directory"),
    "too long": (lambda d: d / ("k" * 300), "File name too long"),
}


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _symlink(path: Path) -> Path:
    _write(path.with_name("real.key"), b"00" * 32 + b"\n")
    path.symlink_to(path.with_name("real.key"))
    return path


def up_argv(side: str, key: Path, workdir: Path) -> list[str]:
    where = (
        ["--listen", "127.0.0.1", "--upstream", f"unix:{workdir / 'api.sock'}"]
        if side == "windows"
        else ["--host-ip", "127.0.0.1", "--socket", str(workdir / "s.sock")]
    )
    return ["up", "--side", side, "--port", str(free_tcp_port()), "--key-file", str(key), *where]


@pytest.mark.parametrize("side", ["windows", "wsl"])
@pytest.mark.parametrize("case", sorted(KEY_FILES))
def test_up_with_a_bad_key_file_says_so_in_one_line(
    program: list[str], tmp_path: Path, side: str, case: str
) -> None:
    make, words = KEY_FILES[case]
    done = run(program, *up_argv(side, make(tmp_path), tmp_path))
    assert done.returncode == 1
    line = one_line(done)
    assert line.startswith("tailscale-wsl2: ")
    assert words in line


def test_up_names_a_key_file_that_is_not_utf8_as_it_was_typed(
    program: list[str], tmp_path: Path
) -> None:
    done = run(program, *up_argv("wsl", tmp_path / NON_UTF8, tmp_path))
    assert done.returncode == 1
    line = one_line(done)
    assert line.startswith("tailscale-wsl2: no link key at ")
    assert "key-" in line


def test_doctor_names_a_relative_key_file_so_that_its_fixes_work_from_anywhere(
    program: list[str], tmp_path: Path
) -> None:
    """The WSL2 half's own fix takes the absolute path; the Windows half's, the path through
    the distro's share, which Windows reaches (a relative name would be Windows' own folder)."""
    where = ["--side", "wsl", "--host-ip", "127.0.0.1", "--port", "9", "--timeout", "0.2"]
    done = subprocess.run(
        [*program, "doctor", *where, "--key-file", "rel.key", "--no-color"],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "WSL_DISTRO_NAME": "Ubuntu"},
    )
    assert done.returncode == 1
    report = done.stdout.decode()
    assert f"no link key at {tmp_path / 'rel.key'}" in report
    on_windows = "\\\\wsl$\\Ubuntu" + str(tmp_path / "rel.key").replace("/", "\\")
    assert f'--key-file "{on_windows}"` on Windows' in report
    assert f"--key-file {tmp_path / 'rel.key'}`" in report


@pytest.mark.parametrize(
    ("socket_path", "words"),
    [
        (lambda d: _mkdir(d / "s.sock"), "exists and is not a socket"),
        (lambda d: d / ("s" * 120), "too long for a Unix socket"),
        (lambda d: _write(d / "f", b"") / "s.sock", "pick another path with --socket"),
    ],
)
def test_up_with_a_bad_socket_path_says_so_in_one_line(
    program: list[str], tmp_path: Path, socket_path: Callable[[Path], Path], words: str
) -> None:
    argv = ["up", "--side", "wsl", "--host-ip", "127.0.0.1", "--insecure-no-auth"]
    done = run(program, *argv, "--socket", str(socket_path(tmp_path)))
    assert done.returncode == 1
    assert words in one_line(done)


def test_up_serves_a_socket_whose_name_is_not_utf8(program: list[str], tmp_path: Path) -> None:
    path = tmp_path / (NON_UTF8 + ".sock")
    argv = [*program, "up", "--side", "wsl", "--host-ip", "127.0.0.1", "--insecure-no-auth"]
    half = start_process([*argv, "--socket", str(path)], tmp_path / "wsl.log")
    try:
        wait_until(path.exists, lambda: half.popen.poll() is not None, half.output, "the WSL2 half")
    finally:
        status = half.stop(signal.SIGTERM)
    log = half.output()
    assert status == 0, log
    assert "Logging error" not in log, log
    assert "Traceback" not in log, log
    assert "listening on " in log


@pytest.mark.parametrize(
    "args",
    [
        ["up", "--port", "0"],
        ["up", "--port", "many"],
        ["up", "--max-connections", "0"],
        ["up", "--socket-mode", "rw-rw----"],
        ["up", "--socket-mode", "1777"],
        ["doctor", "--timeout", "soon"],
        ["doctor", "--port", "70000"],
        ["firewall", "add", "--port", "-1"],
        ["version", "extra"],
    ],
)
def test_a_malformed_option_is_usage_exit_2(program: list[str], args: list[str]) -> None:
    done = run(program, *args)
    assert done.returncode == 2
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr
    assert "Usage:" in stderr


def test_socket_mode_says_what_it_takes(program: list[str]) -> None:
    stderr = run(program, "up", "--socket-mode", "rw-rw----").stderr.decode()
    assert "Invalid value for '--socket-mode': not an octal file mode: 'rw-rw----' (e.g. 0660)" in (
        " ".join(stderr.split())
    )


@pytest.mark.parametrize("command", [["add"], ["remove"], ["show"], ["add", "--subnet", "x"]])
@pytest.mark.skipif(sys.platform == "win32", reason="the firewall commands' home")
def test_firewall_elsewhere_than_windows_is_one_line(
    program: list[str], command: list[str]
) -> None:
    done = run(program, "firewall", *command)
    assert done.returncode == 1
    assert one_line(done).startswith("tailscale-wsl2: firewall commands are for Windows")


def doctor_json(program: list[str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return run(program, "doctor", "--side", "wsl", "--host-ip", "127.0.0.1", "--json", *args)


@pytest.mark.parametrize("case", sorted(KEY_FILES))
def test_doctor_reports_a_bad_key_file_as_a_finding(
    program: list[str], tmp_path: Path, case: str
) -> None:
    make, words = KEY_FILES[case]
    done = doctor_json(program, "--key-file", str(make(tmp_path)), "--timeout", "0.2")
    assert done.returncode == 1
    assert b"Traceback" not in done.stderr
    assert words.encode() in done.stdout
    assert b'"id": "link-key",\n      "status": "failure"' in done.stdout


@pytest.mark.parametrize(
    ("socket_path", "words"),
    [
        (lambda d: _mkdir(d / "s.sock"), "exists but is not a socket"),
        (lambda d: d / ("s" * 120), "is too long for a Unix socket"),
        (lambda d: _write(d / "f", b"") / "s.sock", ": Not a directory"),
        (lambda d: d / (NON_UTF8 + ".sock"), "no socket at"),
    ],
)
def test_doctor_reports_a_bad_socket_path_as_a_finding(
    program: list[str], tmp_path: Path, socket_path: Callable[[Path], Path], words: str
) -> None:
    path = socket_path(tmp_path)
    done = doctor_json(program, "--socket", str(path), "--insecure-no-auth", "--timeout", "0.2")
    assert done.returncode == 1
    assert b"Traceback" not in done.stderr
    assert words.encode() in done.stdout
    assert b'"id": "socket",\n      "status": "failure"' in done.stdout


def test_doctor_prints_a_name_that_is_not_utf8_as_it_was_typed(
    program: list[str], tmp_path: Path
) -> None:
    path = tmp_path / (NON_UTF8 + ".sock")
    argv = ["doctor", "--side", "wsl", "--host-ip", "127.0.0.1", "--timeout", "0.2"]
    done = run(program, *argv, "--insecure-no-auth", "--socket", str(path))
    assert done.returncode == 1
    assert b"Traceback" not in done.stderr
    assert b"no socket at " + os.fsencode(path) in done.stdout  # the bytes, as typed
    as_json = doctor_json(program, "--insecure-no-auth", "--socket", str(path))
    assert "key-\ufffd\ufffd.sock" in as_json.stdout.decode("utf-8")  # JSON stays UTF-8
