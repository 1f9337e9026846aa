"""The commands a fix prints, made from the options the user gave, so that copying one works.

A fix that says `sudo tailscale-wsl2 up` to someone who started the half with `--key-file` and
`--port` starts a half that cannot reach the other one. So every start and doctor command that a
message prints is made here, from this run's `Options`: each option that differs from its
default, written as the command line takes it back.

Printed inside WSL2, the Windows half's command carries what both halves must agree on (the
port, the key file as Windows names it, `--insecure-no-auth`, a forced `--side`) and, when the
WSL2 half dials a loopback address, that address to listen on. What only Windows knows (its
LocalAPI, its adapter) it leaves to the Windows half to find, as `up` does by default.
"""

import ipaddress
import re
import shlex
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from tailscale_wsl2.facts import DEFAULT_PORT, DEFAULT_SOCKET, DEFAULT_SOCKET_MODE, PROGRAM
from tailscale_wsl2.link.mismatch import LinkFixes
from tailscale_wsl2.net.endpoints import Endpoint, NamedPipeEndpoint, TcpEndpoint

if TYPE_CHECKING:  # halves.py builds its fixes with these functions
    from tailscale_wsl2.plan.halves import Options

__all__ = [
    "WINDOWS_PROGRAM",
    "distro_of_share",
    "endpoint_option",
    "link_fixes",
    "windows_doctor_command",
    "windows_drive_path",
    "windows_path",
    "windows_up_command",
    "windows_words_from_wsl",
    "wsl_doctor_command",
    "wsl_up_command",
]

WINDOWS_PROGRAM = f"{PROGRAM}.exe"
# WSL mounts Windows drives here by default (/etc/wsl.conf [automount] root).
_DRIVE_MOUNT = re.compile(r"^/mnt/([a-zA-Z])(/.*)?$")
# How Windows names the root of a running distro (`wslpath -w /`): its share, then the name.
_DISTRO_SHARE = re.compile(r"^\\\\(?:wsl\.localhost|wsl\$)\\([^\\]+)\\?$", re.IGNORECASE)
# Words cmd.exe and PowerShell both take as they are.
_PLAIN_WINDOWS_WORD = re.compile(r"^[\w.:\\/=+-]+$")


def endpoint_option(endpoint: Endpoint) -> str:
    """`endpoint` as `--upstream` takes it."""
    if isinstance(endpoint, TcpEndpoint):
        return f"tcp:{endpoint}"
    if isinstance(endpoint, NamedPipeEndpoint):
        return f"npipe:{endpoint.name}"
    return f"unix:{endpoint.path}"


def windows_drive_path(path: Path) -> str | None:
    """A path under a WSL drive mount as Windows names it (`/mnt/c/x` -> `C:\\x`); None for
    any other path."""
    match = _DRIVE_MOUNT.match(PurePosixPath(path).as_posix())
    if match is None:
        return None
    rest = (match[2] or "/").replace("/", "\\")
    return f"{match[1].upper()}:{rest}"


def distro_of_share(root: str) -> str | None:
    """The distro's name in `wslpath -w /`'s answer (`\\\\wsl.localhost\\Ubuntu\\`), or
    None for anything else."""
    match = _DISTRO_SHARE.match(root.strip())
    return match[1] if match else None


def windows_path(path: Path, distro: str | None) -> str:
    """`path` as Windows names it: on a Windows drive, with its letter; elsewhere in the
    distro `distro`, through WSL's share (`\\\\wsl$\\Ubuntu\\home\\me\\x`, which Windows
    reaches while the distro runs). Without a distro, or relative, as it is (a test runs the
    Windows half on the same Linux)."""
    if (on_drive := windows_drive_path(path)) is not None:
        return on_drive
    posix = PurePosixPath(path)
    if distro is None or not posix.is_absolute():
        return str(path)
    return f"\\\\wsl$\\{distro}" + posix.as_posix().replace("/", "\\")


def _posix_command(words: Sequence[str]) -> str:
    return " ".join(shlex.quote(word) for word in words)


def _windows_word(word: str) -> str:
    return word if _PLAIN_WINDOWS_WORD.match(word) else '"' + word.replace('"', '\\"') + '"'


def _windows_command(words: Sequence[str]) -> str:
    return " ".join(_windows_word(word) for word in words)


def _shared(options: "Options", side: str) -> list[str]:
    """The options every command of one side carries: a forced side, the port."""
    words = ["--side", side] if options.side else []
    if options.port != DEFAULT_PORT:
        words += ["--port", str(options.port)]
    return words


def _wsl_words(options: "Options", *, with_key: bool = False) -> list[str]:
    """The WSL2 half's options for `up` and doctor alike."""
    words = _shared(options, "wsl")
    if options.host_ip:
        words += ["--host-ip", options.host_ip]
    if options.upstream:
        words += ["--upstream", endpoint_option(options.upstream)]
    if options.socket != DEFAULT_SOCKET:
        words += ["--socket", str(options.socket)]
    if options.key_file:
        words += ["--key-file", str(options.key_file)]
    if options.insecure_no_auth and not with_key:
        words.append("--insecure-no-auth")
    return words


def wsl_up_command(options: "Options", *, sudo: bool, with_key: bool = False) -> str:
    """The WSL2 half's start; `with_key`: without --insecure-no-auth."""
    words = [*(["sudo"] if sudo else []), PROGRAM, "up", *_wsl_words(options, with_key=with_key)]
    if options.socket_mode != DEFAULT_SOCKET_MODE:
        words += ["--socket-mode", f"{options.socket_mode:04o}"]
    return _posix_command(words)


def wsl_doctor_command(options: "Options") -> str:
    return _posix_command([PROGRAM, "doctor", *_wsl_words(options)])


def _windows_half_address(options: "Options") -> TcpEndpoint | None:
    """Where a WSL2 half with these options dials the Windows half, when it is given."""
    if isinstance(options.upstream, TcpEndpoint):
        return options.upstream
    if options.host_ip and not options.upstream:
        return TcpEndpoint(options.host_ip, options.port)
    return None


def windows_words_from_wsl(options: "Options", distro: str | None = None) -> list[str]:
    """The Windows half's options that must agree with a WSL2 half's: for the fixes printed
    inside WSL2 (in the distro `distro`), and for the Windows half's install that
    `install --windows-exe` runs."""
    address = _windows_half_address(options)
    port = address.port if address else options.port
    words = ["--side", "windows"] if options.side else []
    if port != DEFAULT_PORT:
        words += ["--port", str(port)]
    if options.listen:  # given for the Windows half (install --windows-exe passes it on)
        words += ["--listen", options.listen]
    elif address and ipaddress.ip_address(address.host).is_loopback:
        words += ["--listen", address.host]
    if options.key_file:
        words += ["--key-file", windows_path(options.key_file, distro)]
    if options.insecure_no_auth:
        words.append("--insecure-no-auth")
    return words


def _windows_words(options: "Options") -> list[str]:
    """A Windows half's own options, as doctor on Windows was given them."""
    words = _shared(options, "windows")
    if options.listen:
        words += ["--listen", options.listen]
    if options.upstream:
        words += ["--upstream", endpoint_option(options.upstream)]
    if options.key_file:
        words += ["--key-file", str(options.key_file)]
    if options.insecure_no_auth:
        words.append("--insecure-no-auth")
    return words


def windows_up_command(
    options: "Options", *, from_wsl: bool, with_key: bool = False, distro: str | None = None
) -> str:
    """The Windows half's start: from a WSL2 half's options (`from_wsl`, in the distro
    `distro`), or its own."""
    words = windows_words_from_wsl(options, distro) if from_wsl else _windows_words(options)
    if with_key and "--insecure-no-auth" in words:
        words.remove("--insecure-no-auth")
    return _windows_command([WINDOWS_PROGRAM, "up", *words])


def windows_doctor_command(options: "Options", *, from_wsl: bool, distro: str | None = None) -> str:
    words = windows_words_from_wsl(options, distro) if from_wsl else _windows_words(options)
    return _windows_command([WINDOWS_PROGRAM, "doctor", *words])


def link_fixes(options: "Options", *, sudo: bool, distro: str | None) -> LinkFixes:
    """The commands a WSL2 half with these options, in the distro `distro` (None: not
    known), names in its fixes."""
    return LinkFixes(
        windows_up=windows_up_command(options, from_wsl=True, distro=distro),
        windows_up_with_key=windows_up_command(
            options, from_wsl=True, with_key=True, distro=distro
        ),
        wsl_up=wsl_up_command(options, sudo=sudo),
        wsl_up_with_key=wsl_up_command(options, sudo=sudo, with_key=True),
        doctor=wsl_doctor_command(options),
        windows_doctor=windows_doctor_command(options, from_wsl=True, distro=distro),
    )
