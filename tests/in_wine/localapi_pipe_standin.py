"""Tailscale's LocalAPI on a Windows named pipe, for end-to-end tests of the Windows half.

Run it in a Windows Python (here: `tools/winpy -m tests.in_wine.localapi_pipe_standin NAME`).
It serves tests/localapi_standin.py's handler, the same HTTP code the Linux tests use (status
with its Tailscale-Version header, the watch-ipn-bus stream, file-put uploads answered with
byte count and SHA-256, `/standin/download?bytes=N`), over tests/in_wine/pipe_server.py's
`NamedPipeListener`, which makes the pipe the way tailscaled does (byte mode, 256 KiB buffers,
one instance per client). So the Windows half's upstream path is the real one: its
`open_named_pipe`, Win32 pipe calls and trio's IOCP loop.

Once the pipe exists it prints one line, `listening on NAME`, and flushes: the test starts its
clients only after reading it. It serves until killed.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import trio

if sys.platform != "win32":
    raise ImportError("localapi_pipe_standin is Windows-only")

from tests.in_wine.pipe_server import serve_named_pipe
from tests.in_wine.wine_main import apply_wine_trio_patch
from tests.support.localapi_standin import handle_quietly

# Everything below is Windows-only: mypy checks it with --platform win32.
assert sys.platform == "win32" or not TYPE_CHECKING

READY_LINE = "listening on {name}"


async def serve(name: str) -> None:
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(serve_named_pipe, handle_quietly, name)
        print(READY_LINE.format(name=listener.name), flush=True)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(r"usage: python -m tests.in_wine.localapi_pipe_standin \\.\pipe\NAME")
    apply_wine_trio_patch()
    trio.run(serve, sys.argv[1])


if __name__ == "__main__":
    main()
