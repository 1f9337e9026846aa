"""Run a program with its stdout on a pseudo-terminal, as a person at a terminal would.

Colour and other terminal-only behaviour depend on `isatty()`, which a pipe (what
`subprocess.run(capture_output=True)` gives) never is. The pseudo-terminal is read until the
program closes it; stderr is captured apart, through a pipe.
"""

import errno
import os
import pty
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tests.support import ROOT

__all__ = ["TerminalRun", "run_on_terminal"]


@dataclass(frozen=True)
class TerminalRun:
    status: int
    stdout: str
    stderr: str


def _read_until_closed(master: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError as exc:  # Linux reports the closed terminal as EIO
            if exc.errno != errno.EIO:
                raise
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def run_on_terminal(
    argv: Sequence[str], env: Mapping[str, str], timeout: float = 60.0
) -> TerminalRun:
    """Run `argv` with stdout on a new pseudo-terminal; the terminal's \\r\\n become \\n."""
    master, slave = pty.openpty()
    try:
        with subprocess.Popen(
            argv, stdout=slave, stderr=subprocess.PIPE, env=dict(env), cwd=ROOT
        ) as process:
            os.close(slave)
            slave = -1
            stdout = _read_until_closed(master)
            stderr = process.stderr.read() if process.stderr else b""
            status = process.wait(timeout)
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    return TerminalRun(
        status, stdout.decode().replace("\r\n", "\n"), stderr.decode(errors="replace")
    )
