"""Running the commands a fix prints, as a user copies them, against the loopback chain.

A fix is only right if its command works when copied. Here the command is taken from the fix
exactly as printed (between backticks), with two stand-ins a test box needs: the program under
test for the name `tailscale-wsl2` (or `.exe`), and no `sudo` for a test that is root already.
A Windows half started on Linux also needs what only a real Windows has, its LocalAPI
(`--upstream`): that, and only that, is added, and the test checks that everything else the
half needs (side, port, listen address, key file) was printed.
"""

import os
import re
import shlex
import socket
from pathlib import Path

from tests.support.chain import Chain, Process, connectable, start_process, wait_for_process

PROGRAM_NAMES = ("tailscale-wsl2", "tailscale-wsl2.exe")


def commands_in(fix: str) -> list[str]:
    """The commands in a fix: its backticked words that run this program (with sudo or not)."""
    quoted = re.findall(r"`([^`]+)`", fix)
    return [text for text in quoted if _words(text)[0] in PROGRAM_NAMES]


def the_command(fix: str, subcommand: str) -> str:
    """The one command in `fix` that runs `subcommand` (up, doctor)."""
    found = [text for text in commands_in(fix) if _words(text)[1] == subcommand]
    assert len(found) == 1, f"expected one `{subcommand}` command in: {fix}"
    return found[0]


def _words(command: str) -> list[str]:
    words = shlex.split(command)
    if words[0] == "sudo":
        assert os.geteuid() == 0, "a test that runs a sudo command must be root"
        words = words[1:]
    return words


def as_run_here(chain: Chain, command: str) -> list[str]:
    """The argv that runs `command` with the program under test in place of its name."""
    name, *args = _words(command)
    assert name in PROGRAM_NAMES, command
    if name.endswith(".exe"):
        # On Windows the half finds its LocalAPI; on this Linux it is the stand-in's socket.
        assert args[0] == "up", command
        assert "--upstream" not in args, command
        args += ["--upstream", f"unix:{chain.localapi_socket}"]
    return [*chain.program, *args]


def start_printed(
    chain: Chain, command: str, name: str, env: dict[str, str] | None = None
) -> Process:
    """Start a half by the printed `command`; wait until it listens where the chain expects."""
    argv = as_run_here(chain, command)
    process = start_process(argv, chain.workdir / f"{name}-from-fix.log", env=env)
    if name == "windows":
        ready = lambda: connectable(socket.AF_INET, ("127.0.0.1", chain.port))  # noqa: E731
    else:
        ready = lambda: connectable(socket.AF_UNIX, str(chain.socket))  # noqa: E731
    wait_for_process(ready, process, f"the {name} half started by the printed fix")
    chain.processes[name] = process
    return process


def printed_key_file(command: str) -> Path:
    words = _words(command)
    return Path(words[words.index("--key-file") + 1])
