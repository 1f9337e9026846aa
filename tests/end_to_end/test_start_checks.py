"""What the halves refuse or warn about when they start (module and frozen binary): key files
that block, never end or are open to others, options that cannot work here, a socket
directory others can change, and two WSL2 halves started at once on one path."""

import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.chain import Chain, connectable, start_process

# A key file that never ends must not fill the machine's memory while it is read.
MEMORY_CAP = 1 << 30


def run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def test_a_fifo_as_the_key_file_does_not_make_the_half_deaf_to_signals(
    program: list[str], tmp_path: Path
) -> None:
    fifo = tmp_path / "link.key"
    os.mkfifo(fifo)
    chain = Chain(program, tmp_path)
    process = start_process(chain.wsl_half_argv("--key-file", str(fifo)), tmp_path / "wsl.log")
    try:
        time.sleep(2)  # reading the key, or refusing it
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
        process.popen.wait(timeout=15)  # it ends: it never did, inside the event loop
    finally:
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait()
    assert not chain.socket.exists()


def test_an_endless_key_file_is_one_line(program: list[str], tmp_path: Path) -> None:
    chain = Chain(program, tmp_path)

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    result = subprocess.run(
        chain.wsl_half_argv("--key-file", "/dev/zero"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=cap_memory,
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_key_others_can_read_is_named_with_its_fix(program: list[str], tmp_path: Path) -> None:
    chain = Chain(program, tmp_path)
    chain.key_file.write_text(os.urandom(32).hex() + "\n")
    chain.key_file.chmod(0o644)
    try:
        process = chain.start_wsl_half()
        output = process.output()
    finally:
        chain.stop_all()
    assert (
        f"the link key {chain.key_file} is open to other users (mode 0644), and whoever can "
        f"read it can use this Windows user's Tailscale; fix: `chmod 600 {chain.key_file}`"
    ) in output


def test_a_named_pipe_upstream_off_windows_is_refused_at_start(
    program: list[str], tmp_path: Path
) -> None:
    chain = Chain(program, tmp_path)
    argv = chain.windows_half_argv("--upstream", r"npipe:\\.\pipe\tailscale-test")
    result = run(argv)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        r"tailscale-wsl2: --upstream npipe:\\.\pipe\tailscale-test: named pipes exist only on "
        "Windows; drop --upstream, or give it tcp:HOST:PORT or unix:PATH"
    ]
    assert not connectable(socket.AF_INET, ("127.0.0.1", chain.port))  # it never listened


def test_a_socket_directory_others_can_change_is_refused(
    program: list[str], tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # no sticky bit: anyone could swap what is in it
    chain = Chain(program, tmp_path)
    chain.key_file.write_text(os.urandom(32).hex() + "\n")
    chain.key_file.chmod(0o600)
    result = run(chain.wsl_half_argv("--socket", str(shared / "tailscaled.sock")))
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"tailscale-wsl2: other users can change {shared} (mode 0777")
    assert list(shared.iterdir()) == []


def test_two_wsl_halves_started_at_once_never_both_run(program: list[str], tmp_path: Path) -> None:
    chain = Chain(program, tmp_path)
    chain.key_file.write_text(os.urandom(32).hex() + "\n")
    chain.key_file.chmod(0o600)
    for attempt in range(3):
        argv = chain.wsl_half_argv()
        first = start_process(argv, tmp_path / f"first-{attempt}.log")
        second = start_process(argv, tmp_path / f"second-{attempt}.log")
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                exited = [p for p in (first, second) if p.popen.poll() is not None]
                if exited and connectable(socket.AF_UNIX, str(chain.socket)):
                    break
                time.sleep(0.05)
            running = [p for p in (first, second) if p.popen.poll() is None]
            assert len(running) == 1, [p.output() for p in (first, second)]
            [loser] = [p for p in (first, second) if p not in running]
            assert loser.popen.returncode == 1
            assert "another tailscale-wsl2 already serves" in loser.output()
        finally:
            for process in (first, second):
                if process.popen.poll() is None:
                    process.stop()
        assert not chain.socket.exists()
