"""The whole chain as users run it: real processes, real sockets, real clients.

Each test runs twice: with the package in this interpreter and with the frozen
binary from `make build` (the `program` fixture).
"""

import hashlib
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import localapi_standin
from tests.support.chain import Chain, running_chain, start_process
from tests.support.ci import require
from tests.support.http_client import parse_answer, receive_until_closed, request

# Starts, each stopped by a signal the moment its socket file appears.
SIGNAL_RACE_ATTEMPTS = 5


@pytest.fixture
def chain(program: list[str], tmp_path: Path) -> Iterator[Chain]:
    with running_chain(program, tmp_path) as chain:
        yield chain


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    require(shutil.which("curl") is not None, "curl is not installed")
    return subprocess.run(
        ["curl", "--silent", "--show-error", *args], capture_output=True, timeout=120, check=False
    )


def test_curl_gets_the_status_document_byte_exact(chain: Chain) -> None:
    done = curl(
        "--unix-socket", str(chain.socket), "-i", "http://local-tailscaled.sock/localapi/v0/status"
    )
    assert done.returncode == 0, done.stderr
    answer = parse_answer(done.stdout)
    assert answer.status == 200
    assert answer.headers["tailscale-version"] == localapi_standin.DAEMON_VERSION
    assert answer.body == json.dumps(localapi_standin.STATUS).encode()


def test_large_upload_arrives_whole(chain: Chain, tmp_path: Path) -> None:
    upload = tmp_path / "upload.bin"
    block = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB
    digest = hashlib.sha256()
    with upload.open("wb") as out:
        for index in range(256):
            piece = block[index:] + block[:index]
            out.write(piece)
            digest.update(piece)
    done = curl(
        "--unix-socket",
        str(chain.socket),
        "-T",
        str(upload),
        "http://local-tailscaled.sock/localapi/v0/file-put/nodeid/upload.bin",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"bytes": 256 << 20, "sha256": digest.hexdigest()}


def test_large_download_is_byte_exact(chain: Chain) -> None:
    size = 64 << 20
    answer = request(chain.socket, "GET", f"/standin/download?bytes={size}")
    assert answer.status == 200
    assert answer.body == localapi_standin.download_bytes(size)


def test_long_stream_then_client_leaves_and_relay_serves_on(chain: Chain) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(chain.socket))
        sock.sendall(b"GET /localapi/v0/watch-ipn-bus?mask=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while received.count(b'"Seq"') < 20:
            received += sock.recv(65536)
    assert b"Transfer-Encoding: chunked" in received
    assert b'{"Seq": 19, "State": 6}' in received
    assert request(chain.socket, "GET", "/localapi/v0/status").status == 200


def test_half_close_gets_the_whole_answer(chain: Chain) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(chain.socket))
        sock.sendall(b"GET /standin/download?bytes=1000000 HTTP/1.1\r\nConnection: close\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        answer = parse_answer(receive_until_closed(sock))
    assert answer.body == localapi_standin.download_bytes(1_000_000)


def test_upgraded_connection_carries_raw_bytes(chain: Chain) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(chain.socket))
        sock.sendall(
            b"POST /localapi/v0/dial HTTP/1.1\r\nUpgrade: ts-dial\r\n"
            b"Connection: upgrade\r\nDial-Host: 100.64.0.2\r\nDial-Port: 22\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 ")
        payload = bytes(range(256)) * 40
        sock.sendall(payload)
        echoed = b""
        while len(echoed) < len(payload):
            echoed += sock.recv(65536)
    assert echoed == payload


def test_200_concurrent_clients(chain: Chain) -> None:
    statuses: list[int] = []

    def one_client() -> None:
        statuses.append(request(chain.socket, "GET", "/localapi/v0/status").status)

    threads = [threading.Thread(target=one_client) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [200] * 200


def test_502_names_the_windows_half_when_it_is_down(chain: Chain) -> None:
    chain.stop("windows")
    answer = request(chain.socket, "GET", "/localapi/v0/status")
    assert answer.status == 502
    # The commands carry the options the halves were given: copied, they work
    # (test_doctor_chain.py runs them).
    assert answer.body.decode() == (
        f"the Windows half of tailscale-wsl2 is not reachable at 127.0.0.1:{chain.port} "
        "(connection refused); run `tailscale-wsl2.exe up --side windows "
        f"--port {chain.port} --listen 127.0.0.1 --key-file {chain.key_file}` on Windows, "
        f"then `tailscale-wsl2 doctor --side wsl --port {chain.port} --host-ip 127.0.0.1 "
        f"--socket {chain.socket} --key-file {chain.key_file}` here\n"
    )


def test_502_names_the_localapi_when_tailscale_is_down(chain: Chain) -> None:
    chain.stop("localapi")
    chain.localapi_socket.unlink(missing_ok=True)
    answer = request(chain.socket, "GET", "/localapi/v0/status")
    assert answer.status == 502
    assert answer.body.startswith(b"Tailscale's LocalAPI on Windows is not reachable at ")
    assert b"is Tailscale running on Windows?" in answer.body


def test_sigterm_exits_cleanly_and_removes_the_socket(chain: Chain) -> None:
    assert chain.stop("wsl") == 0
    assert not chain.socket.exists()
    assert chain.stop("windows") == 0


def test_stale_socket_is_replaced(program: list[str], tmp_path: Path) -> None:
    chain = Chain(program, tmp_path)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(chain.socket))
    stale.close()  # the file stays, nobody answers: what a killed relay leaves
    try:
        chain.start_localapi()
        chain.start_windows_half()
        chain.start_wsl_half()
        assert request(chain.socket, "GET", "/localapi/v0/status").status == 200
    finally:
        chain.stop_all()


def test_a_live_socket_is_never_taken_over(chain: Chain) -> None:
    second = subprocess.run(chain.wsl_half_argv(), capture_output=True, timeout=30, check=False)
    assert second.returncode == 1
    [line] = second.stderr.decode().strip().splitlines()
    assert re.fullmatch(
        re.escape(f"tailscale-wsl2: another tailscale-wsl2 already serves {chain.socket} (pid ")
        + r"\d+"
        + re.escape("); stop it first, or pick another path with --socket"),
        line,
    ), line
    assert request(chain.socket, "GET", "/localapi/v0/status").status == 200


def test_socket_mode_is_0660_by_default(chain: Chain) -> None:
    assert chain.socket.stat().st_mode & 0o777 == 0o660


def test_sigint_is_a_clean_stop_too(chain: Chain) -> None:
    assert chain.processes.pop("wsl").stop(signal.SIGINT) == 0
    assert not chain.socket.exists()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_signal_the_moment_the_socket_appears_is_a_clean_stop(
    chain: Chain, stop_signal: signal.Signals
) -> None:
    """A service manager, or an impatient Ctrl+C, may stop the half the moment it starts:
    the signal must still be a clean stop (exit 0, socket file removed), not Python's
    default (SIGTERM kills at once and leaves the socket file; SIGINT raises)."""
    chain.stop("wsl")
    for attempt in range(SIGNAL_RACE_ATTEMPTS):
        process = start_process(chain.wsl_half_argv(), chain.workdir / f"wsl-{attempt}.log")
        deadline = time.monotonic() + 15
        while not chain.socket.exists() and process.popen.poll() is None:
            assert time.monotonic() < deadline, process.output()
            time.sleep(0.0005)
        assert process.stop(stop_signal) == 0, process.output()
        assert not chain.socket.exists(), process.output()


def test_wrong_link_key_gets_a_502_naming_the_cause(chain: Chain, tmp_path: Path) -> None:
    chain.stop("wsl")
    other_key = tmp_path / "other.key"
    other_key.write_text("ab" * 32 + "\n")
    chain.start_wsl_half("--key-file", str(other_key))  # the later option wins
    answer = request(chain.socket, "GET", "/localapi/v0/status")
    assert answer.status == 502
    assert answer.body.decode() == (
        f"the Windows half at 127.0.0.1:{chain.port} refused the link key: the two halves use "
        "different keys; restart both so they read the same key: `tailscale-wsl2.exe up "
        f"--side windows --port {chain.port} --listen 127.0.0.1 --key-file {other_key}` on "
        f"Windows, then `tailscale-wsl2 up --side wsl --port {chain.port} --host-ip 127.0.0.1 "
        f"--socket {chain.socket} --key-file {other_key}` here\n"
    )
    assert (
        "refused a connection from 127.0.0.1: wrong link key" in chain.processes["windows"].output()
    )


def test_insecure_no_auth_on_both_sides_works_and_warns(program: list[str], tmp_path: Path) -> None:
    chain = Chain(program, tmp_path)
    try:
        chain.start_localapi()
        windows = chain.start_windows_half("--insecure-no-auth")
        wsl = chain.start_wsl_half("--insecure-no-auth")
        assert request(chain.socket, "GET", "/localapi/v0/status").status == 200
        for half in (windows, wsl):
            assert "WARNING: --insecure-no-auth: any program that can reach" in half.output()
        assert not chain.key_file.exists()
    finally:
        chain.stop_all()


def test_a_wsl2_half_with_a_key_and_a_windows_half_without_one_are_named(
    program: list[str], tmp_path: Path
) -> None:
    chain = Chain(program, tmp_path)
    try:
        chain.start_localapi()
        chain.start_windows_half("--insecure-no-auth")
        chain.key_file.write_text("ab" * 32 + "\n")
        chain.key_file.chmod(0o600)
        chain.start_wsl_half()
        answer = request(chain.socket, "GET", "/localapi/v0/status")
        assert answer.status == 502
        assert answer.body.decode() == (
            f"the Windows half at 127.0.0.1:{chain.port} runs with --insecure-no-auth, and this "
            "half expects the link handshake; restart it without --insecure-no-auth: "
            f"`tailscale-wsl2.exe up --side windows --port {chain.port} --listen 127.0.0.1 "
            f"--key-file {chain.key_file}` on Windows\n"
        )
        assert "a WSL2 half with a link key connected" in chain.processes["windows"].output()
    finally:
        chain.stop_all()
