"""What one relay process spends moving 1 GiB between two sockets: copy or splice.

    .venv/bin/python bench/splice_or_copy.py [ROUNDS]

For each direction (Unix socket into TCP, TCP into Unix socket) a writer
process sends 1 GiB into the relay's source socket and a reader process drains
its destination; the relay, this process, moves the bytes with blocking calls
in one of three ways: `recv_into` a 256 KiB buffer and `sendall` (the copy), or
`splice` through a pipe of 1 MiB or 256 KiB. It prints the relay's own user and
system CPU per GiB (getrusage), its rate and how many system calls it made.
Linux only. The figures behind `_linux_splice.py`'s choice are in
bench/NOTEBOOK.md.
"""

import fcntl
import multiprocessing
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

GIB = 1 << 30
CHUNK = 256 * 1024


def write_all(family: int, address: str | tuple[str, int]) -> None:
    with socket.socket(family) as sock:
        sock.connect(address)
        chunk = b"x" * CHUNK
        for _ in range(GIB // CHUNK):
            sock.sendall(chunk)


def drain(listener: socket.socket) -> None:
    connection, _ = listener.accept()
    with connection:
        buffer = bytearray(CHUNK)
        while connection.recv_into(buffer):
            pass


def listener(family: int, workdir: Path, name: str) -> socket.socket:
    sock = socket.socket(family)
    sock.bind(str(workdir / name) if family == socket.AF_UNIX else ("127.0.0.1", 0))
    sock.listen()
    return sock


def copy(src: socket.socket, dst: socket.socket) -> int:
    buffer = bytearray(CHUNK)
    calls = 0
    with memoryview(buffer) as view:
        while received := src.recv_into(buffer):
            dst.sendall(view[:received])
            calls += 2
    return calls


def splice(src: socket.socket, dst: socket.socket, pipe_size: int) -> int:
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, pipe_size)
    calls = 0
    try:
        while moved := os.splice(src.fileno(), write_end, pipe_size):
            calls += 1
            while moved:
                moved -= os.splice(read_end, dst.fileno(), moved)
                calls += 1
    finally:
        os.close(read_end)
        os.close(write_end)
    return calls + 1


def relay_once(way: str, source_family: int, workdir: Path) -> str:
    destination_family = socket.AF_INET if source_family == socket.AF_UNIX else socket.AF_UNIX
    with (
        listener(source_family, workdir, "source.sock") as source,
        listener(destination_family, workdir, "destination.sock") as destination,
    ):
        writer = multiprocessing.Process(
            target=write_all, args=(source_family, source.getsockname())
        )
        reader = multiprocessing.Process(target=drain, args=(destination,))
        writer.start()
        reader.start()
        src, _ = source.accept()
        dst = socket.socket(destination_family)
        dst.connect(destination.getsockname())
        if destination_family == socket.AF_UNIX:  # as the relay sizes it (sockets.py)
            dst.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHUNK)
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        calls = copy(src, dst) if way == "copy" else splice(src, dst, int(way.split()[1]))
        seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        dst.close()
        src.close()
        writer.join()
        reader.join()
    for name in ("source.sock", "destination.sock"):
        (workdir / name).unlink(missing_ok=True)
    user = (after.ru_utime - before.ru_utime) * 1000
    system = (after.ru_stime - before.ru_stime) * 1000
    return (
        f"user {user:4.0f} ms  system {system:4.0f} ms per GiB  "
        f"{GIB / seconds / 1e6:5.0f} MB/s  {calls:6d} system calls"
    )


def main() -> int:
    if not sys.platform.startswith("linux"):
        print("splice is Linux's", file=sys.stderr)
        return 1
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(rounds):
            for source_family, label in (
                (socket.AF_UNIX, "unix -> tcp"),
                (socket.AF_INET, "tcp -> unix"),
            ):
                for way in ("copy", f"splice {1024 * 1024}", f"splice {256 * 1024}"):
                    print(f"{label}  {way:14s} {relay_once(way, source_family, Path(workdir))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
