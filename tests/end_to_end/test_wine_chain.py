"""End to end across both operating systems, on this one Linux machine, with Wine.

The chain of tests/wine_chain.py: `curl --unix-socket` -> the WSL2 half (native Linux) -> TCP
on 127.0.0.1 -> the Windows half (Windows code under Wine) -> a named pipe -> a LocalAPI
stand-in (a Windows Python under Wine). It runs twice: the Windows half as the package in the
Windows Python, and as the test build of the .exe (`make build-windows-test`).

The checks are those of tests/test_end_to_end.py that matter across the operating-system
boundary: byte-exact bodies both ways, a large upload, a long stream, clients that leave early
(the relay serves on), and the missing pipe (Tailscale not running on Windows) answered with a
502 that names the pipe. One chain serves all the tests of one program: a Wine process takes a
second or more to start, and none of these tests changes the chain.

Without Wine (not installable here: not root, or no apt-get) the tests skip, except in CI, where
they fail: CI must cross the boundary for real.
"""

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import localapi_standin
from tests.support.ci import require
from tests.support.http_client import parse_answer, request
from tests.support.procstats import fd_count
from tests.support.wine_chain import (
    WINDOWS_EXE_PROGRAM,
    WINDOWS_MODULE_PROGRAM,
    WINE_TEST_EXE,
    WineChain,
    prepare_wine,
    unique_pipe_name,
)

pytestmark = [
    pytest.mark.wine,
    # Wine's start-up alone may take a minute (WINE_START_TIMEOUT) on a loaded machine.
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        sys.platform == "win32", reason="drives Wine from Linux; on Windows see tests/in_wine"
    ),
]

UPLOAD_MIB = 128
DOWNLOAD_BYTES = 64 << 20
# watch-ipn-bus messages come every 20 ms: 150 of them keep one relayed stream open ~3 s.
STREAM_MESSAGES = 150
# Keep-alive clients that exit: each would leave two descriptors behind if its path lingered.
CLI_COMMANDS = 40
FD_SLACK = 4


@pytest.fixture(scope="session")
def wine() -> None:
    """Wine and the Windows Python are ready (tools/wine-env), or the test skips/fails."""
    prepare_wine("run the Windows half")


@pytest.fixture(scope="module", params=["module", pytest.param("exe", marks=pytest.mark.frozen)])
def windows_program(request: pytest.FixtureRequest, wine: None) -> list[str]:
    """The Windows half: the package in the Windows Python, or the Wine test build of the .exe."""
    if request.param == "module":
        return WINDOWS_MODULE_PROGRAM
    require(
        WINE_TEST_EXE.exists(),
        f"no Wine test build at {WINE_TEST_EXE}: run `make build-windows-test`",
    )
    return WINDOWS_EXE_PROGRAM


@pytest.fixture(scope="module")
def chain(
    windows_program: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WineChain]:
    chain = WineChain(windows_program, tmp_path_factory.mktemp("wine-chain"))
    try:
        chain.start_all()
        yield chain
    finally:
        chain.stop_all()


@pytest.fixture(scope="module")
def upload_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A file of UPLOAD_MIB MiB that no simple pattern describes, and its SHA-256."""
    path = tmp_path_factory.mktemp("upload") / "upload.bin"
    block = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for index in range(UPLOAD_MIB):
            piece = block[index:] + block[:index]
            out.write(piece)
            digest.update(piece)
    return path, digest.hexdigest()


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    require(shutil.which("curl") is not None, "curl is not installed")
    return subprocess.run(
        ["curl", "--silent", "--show-error", *args], capture_output=True, timeout=120, check=False
    )


def url(path: str) -> str:
    return f"http://local-tailscaled.sock{path}"


def test_curl_gets_the_status_document_byte_exact(chain: WineChain) -> None:
    done = curl("--unix-socket", str(chain.socket), "-i", url("/localapi/v0/status"))
    assert done.returncode == 0, f"{done.stderr!r}\n{chain.logs()}"
    answer = parse_answer(done.stdout)
    assert answer.status == 200, chain.logs()
    assert answer.headers["tailscale-version"] == localapi_standin.DAEMON_VERSION
    assert answer.body == json.dumps(localapi_standin.STATUS).encode()


def test_large_upload_arrives_whole(chain: WineChain, upload_file: tuple[Path, str]) -> None:
    path, sha256 = upload_file
    done = curl(
        "--unix-socket",
        str(chain.socket),
        "-T",
        str(path),
        url("/localapi/v0/file-put/nodeid/upload.bin"),
    )
    assert done.returncode == 0, f"{done.stderr!r}\n{chain.logs()}"
    assert json.loads(done.stdout) == {"bytes": UPLOAD_MIB << 20, "sha256": sha256}


def test_large_download_is_byte_exact(chain: WineChain) -> None:
    done = curl(
        "--unix-socket", str(chain.socket), url(f"/standin/download?bytes={DOWNLOAD_BYTES}")
    )
    assert done.returncode == 0, f"{done.stderr!r}\n{chain.logs()}"
    assert done.stdout == localapi_standin.download_bytes(DOWNLOAD_BYTES)


def test_long_stream_then_the_client_leaves_and_the_relay_serves_on(chain: WineChain) -> None:
    started = time.monotonic()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(chain.socket))
        sock.sendall(b"GET /localapi/v0/watch-ipn-bus?mask=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while received.count(b'"Seq"') < STREAM_MESSAGES:
            chunk = sock.recv(65536)
            assert chunk, f"the stream ended early:\n{chain.logs()}"
            received += chunk
        # Leaves mid-stream: the stand-in is still writing into the pipe.
    assert time.monotonic() - started > STREAM_MESSAGES * localapi_standin.WATCH_TICK * 0.9
    assert b"Transfer-Encoding: chunked" in received
    last = STREAM_MESSAGES - 1
    assert f'{{"Seq": {last}, "State": 6}}'.encode() in received
    assert request(chain.socket, "GET", "/localapi/v0/status").status == 200, chain.logs()


def test_a_download_left_early_then_the_next_request_works(chain: WineChain) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(chain.socket))
        sock.sendall(f"GET /standin/download?bytes={DOWNLOAD_BYTES} HTTP/1.1\r\n\r\n".encode())
        received = 0
        while received < 1 << 20:
            chunk = sock.recv(65536)
            assert chunk, f"the download ended early:\n{chain.logs()}"
            received += len(chunk)
        # Leaves with ~63 MiB still to come: a reset towards the Windows half and the pipe.
    for _ in range(3):
        answer = request(chain.socket, "GET", "/localapi/v0/status")
        assert answer.status == 200, chain.logs()
        assert answer.body == json.dumps(localapi_standin.STATUS).encode()


def keep_alive_status_then_exit(socket_path: Path) -> None:
    """What the `tailscale` CLI does: an HTTP/1.1 keep-alive request, the answer read by its
    Content-Length, then the process exits, closing the socket without a half-close."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(socket_path))
        sock.sendall(b"GET /localapi/v0/status HTTP/1.1\r\nHost: local-tailscaled.sock\r\n\r\n")
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        head, _, body = received.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += sock.recv(65536)
        assert b"connection: close" not in head.lower()  # the daemon keeps the pipe open
        assert json.loads(body) == localapi_standin.STATUS


def test_clients_that_exit_leave_nothing_open_along_the_pipe(chain: WineChain) -> None:
    """tailscaled keeps a pipe connection open for the next request for as long as its client
    does, and a pipe cannot be half-closed. Each client that exits must still end its whole
    path (the GONE frame, tailscale_wsl2/sessions.py): otherwise its link stays busy for good
    and the WSL2 half's descriptors pile up, two per `tailscale` command."""
    wsl_half = chain.linux_processes["wsl"].popen.pid
    keep_alive_status_then_exit(chain.socket)
    time.sleep(0.5)
    before = fd_count(wsl_half)
    for _ in range(CLI_COMMANDS):
        keep_alive_status_then_exit(chain.socket)
    deadline = time.monotonic() + 10
    while (after := fd_count(wsl_half)) > before + FD_SLACK and time.monotonic() < deadline:
        time.sleep(0.1)
    assert after <= before + FD_SLACK, f"{after - before} descriptors more:\n{chain.logs()}"


def test_missing_pipe_gets_a_502_naming_the_localapi_pipe(
    windows_program: list[str], tmp_path: Path
) -> None:
    # No stand-in: the pipe does not exist, as when Tailscale is not running on Windows.
    chain = WineChain(windows_program, tmp_path, pipe=unique_pipe_name("absent"))
    try:
        chain.start_windows_half()
        chain.start_wsl_half()
        answer = request(chain.socket, "GET", "/localapi/v0/status")
    finally:
        chain.stop_all()
    assert answer.status == 502, chain.logs()
    body = answer.body.decode()
    assert body.startswith(f"Tailscale's LocalAPI on Windows is not reachable at {chain.pipe} ")
    assert "is Tailscale running on Windows?" in body
