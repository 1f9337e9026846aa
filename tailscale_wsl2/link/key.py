"""The link key: a secret both halves hold, kept in the Windows user's profile.

The Windows half creates it on its first `up`: 32 random bytes, hex-encoded,
in `%LOCALAPPDATA%\\tailscale-wsl2\\link.key`, readable by that user only. The
WSL2 half reads the same file through the Windows drive WSL mounts: it asks
Windows for the user's LOCALAPPDATA through WSL interop (`cmd.exe`) and
translates it with `wslpath`. Only someone who can read the Windows user's
files can therefore use the Windows half, which is the standard the daemon
itself keeps on its own named pipe.

Both sides take `--key-file PATH` instead (the Windows half creates the file
there if missing), which is also how the tests run both halves on Linux.
"""

import os
import re
import secrets
import stat
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.facts import PROGRAM
from tailscale_wsl2.system import RunCommand, read_text_if_present, run_command

__all__ = [
    "KEY_BYTES",
    "exposure_warning",
    "find_key_from_wsl",
    "key_exposure_warning",
    "load_key",
    "load_or_create_key",
    "mount_type",
    "windows_key_path",
]

KEY_BYTES = 32
KEY_DIR = PROGRAM
KEY_NAME = "link.key"


def windows_key_path(environ: Mapping[str, str]) -> Path:
    """Where the Windows half keeps the key by default."""
    local_app_data = environ.get("LOCALAPPDATA")
    if not local_app_data:
        raise ActionableError(
            "LOCALAPPDATA is not set, so there is no place for the link key",
            "pass --key-file PATH",
        )
    return Path(local_app_data) / KEY_DIR / KEY_NAME


def _parse_key(text: str, path: Path) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ActionableError(
            f"the link key in {path} is damaged (expected {KEY_BYTES * 2} hex digits)",
            "delete it, restart `tailscale-wsl2.exe up` on Windows to make a new one, "
            "then restart the WSL2 half",
        )
    return key


def load_key(path: Path) -> bytes:
    """The WSL2 half's read of the key: it never creates one."""
    try:
        return _parse_key(path.read_text(encoding="ascii", errors="replace"), path)
    except FileNotFoundError:
        raise ActionableError(
            f"no link key at {path}",
            "run `tailscale-wsl2.exe up` on Windows first (it creates the key), "
            "or pass --key-file PATH",
        ) from None
    except PermissionError:
        raise ActionableError(
            f"no permission to read the link key at {path}",
            "run as the user who owns it, or pass --key-file PATH",
        ) from None


def restrict_to_owner(path: Path) -> None:
    """Make `path` readable by its owner only (on Windows: drop inherited access)."""
    if sys.platform != "win32":
        os.chmod(path, 0o600)
        return
    # %LOCALAPPDATA% inherits the profile's ACL (the user, SYSTEM and the
    # Administrators group); the key needs the user alone.
    user = f"{os.environ.get('USERDOMAIN', '.')}\\{os.environ.get('USERNAME', '')}"
    subprocess.run(
        ["icacls", str(path), "/inheritance:r", "/grant:r", f"{user}:F"],
        capture_output=True,
        check=True,
        creationflags=subprocess.CREATE_NO_WINDOW,
    )


def load_or_create_key(path: Path) -> bytes:
    """The Windows half's key: the one at `path`, or a new one written there."""
    try:
        return load_key(path)
    except ActionableError:
        if path.exists():
            raise
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    key = secrets.token_bytes(KEY_BYTES)
    # Written and locked down under a temporary name, then renamed, so the key
    # is never readable by others and never half-written at `path`.
    with open(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(key.hex() + "\n")
    restrict_to_owner(staging)
    os.replace(staging, path)
    return key


def _cannot_find_key(reason: str) -> ActionableError:
    return ActionableError(
        f"cannot find the link key: asking Windows for LOCALAPPDATA failed ({reason})",
        "pass --key-file /mnt/c/Users/NAME/AppData/Local/tailscale-wsl2/link.key",
    )


def _interop_answer(run: RunCommand, argv: Sequence[str]) -> str:
    answer = run(argv)
    if answer is None:
        raise _cannot_find_key(f"{argv[0]} could not be run")
    if answer.returncode != 0:
        raise _cannot_find_key(f"{argv[0]} exited with status {answer.returncode}")
    return answer.output.strip()


def find_key_from_wsl(run: RunCommand = run_command) -> Path:
    """The Windows half's key file as a Linux path, found through WSL interop."""
    # chcp 65001: cmd.exe otherwise prints in the OEM code page, which garbles a user name
    # outside ASCII.
    local_app_data = _interop_answer(
        run, ["cmd.exe", "/d", "/c", "chcp 65001 >nul & echo %LOCALAPPDATA%"]
    )
    # An unset variable comes back verbatim, percent signs and all.
    if not local_app_data or "%" in local_app_data:
        raise _cannot_find_key(f"cmd.exe answered {local_app_data!r}")
    linux_dir = _interop_answer(run, ["wslpath", "-u", local_app_data])
    return Path(linux_dir) / KEY_DIR / KEY_NAME


# --- who else can read it ---------------------------------------------------------------------

MOUNTS = Path("/proc/self/mounts")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")
# How WSL mounts the Windows drives (/mnt/c): WSL2's 9p (drvfs), WSL1's drvfs, virtiofs.
WINDOWS_DRIVE_TYPES = frozenset({"9p", "drvfs", "virtiofs"})


def mount_type(path: Path, mounts: str) -> str | None:
    """The file system type of the mount `path` is on, from /proc/self/mounts' text."""
    best, found = "", None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        # The kernel writes a space in a mount point as \040 (and a tab, newline, backslash so).
        point = _OCTAL_ESCAPE.sub(lambda escape: chr(int(escape[1], 8)), fields[1])
        inside = path == Path(point) or Path(point) in path.parents
        if inside and len(point) > len(best):
            best, found = point, fields[2]
    return found


def exposure_warning(path: Path, mode: int, mount: str | None) -> str | None:
    """A warning line when users other than the key's owner can read the key, else None.

    On the Windows drive the mode bits say nothing: WSL gives every Linux user of
    every distro the Windows user's access to those files.
    """
    if mount in WINDOWS_DRIVE_TYPES:
        return (
            f"the link key {path} is on the Windows drive, where every Linux user of every "
            "WSL distro can read it and so use this Windows user's Tailscale through the link; "
            "fix: let only people you trust use WSL on this Windows account, or mount the "
            'Windows drives for your user only ([automount] options = "metadata,umask=077" '
            "in /etc/wsl.conf, then `wsl.exe --shutdown`)"
        )
    if not stat.S_IMODE(mode) & 0o077:
        return None
    return (
        f"the link key {path} is open to other users (mode {stat.S_IMODE(mode):04o}), and "
        f"whoever can read it can use this Windows user's Tailscale; fix: `chmod 600 {path}`"
    )


def key_exposure_warning(
    path: Path, read_mounts: Callable[[Path], str | None] = read_text_if_present
) -> str | None:
    """`exposure_warning` for the key file at `path` as it is now (None on Windows, where
    the key's ACL is set when it is made, and mode bits mean nothing)."""
    if sys.platform == "win32":
        return None
    try:
        resolved = path.resolve()
        mode = resolved.stat().st_mode
    except OSError:
        return None  # loading it says what is wrong
    return exposure_warning(path, mode, mount_type(resolved, read_mounts(MOUNTS) or ""))
