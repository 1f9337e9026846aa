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

On Windows the new key is made private with `icacls`, granting access to the user's SID
(`*S-1-5-21-...`), read from this process's own token: the account is named without a name
lookup, and not from environment variables (USERDOMAIN, USERNAME), which may be unset or name
someone else than the account the process runs as. If that fails, `up` says so in one line
and leaves no temporary key file behind, so the next `up` starts clean.

Reading the file is careful because the path is the user's to type and the WSL2
half reads it as root: only a regular file is read (never through a symbolic
link, so no other file can be passed off as the key), opened without blocking
(a FIFO would otherwise hang the half where no signal reaches it) and read to a
bound (`/dev/zero` would otherwise fill memory). Each way a path can be wrong is
one `KeyFileError` whose line says what to do. A key that other users can read
gets a warning with the command that fixes it (`key_exposure_warning`); on the
Windows drive the mode says nothing, since WSL lets every Linux user of every
distro read the Windows user's files there.
"""

import enum
import os
import re
import secrets
import shlex
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.facts import PROGRAM
from tailscale_wsl2.system import (
    RunCommand,
    read_text_if_present,
    run_command,
    this_system,
    windows_system_tool,
)
from tailscale_wsl2.wslconf_syntax import automount_root

__all__ = [
    "KEY_BYTES",
    "KeyFileError",
    "KeyProblem",
    "Lockdown",
    "current_user_sid",
    "exposure_warning",
    "find_key_from_wsl",
    "icacls_argv",
    "key_exposure_warning",
    "key_files_on_drive_c",
    "key_fix_from_wsl",
    "load_key",
    "load_or_create_key",
    "mount_type",
    "restrict_to_owner",
    "windows_key_path",
]

KEY_BYTES = 32
KEY_DIR = PROGRAM
KEY_NAME = "link.key"
# A key file is 64 hex digits and a line end; anything much larger is another file.
MAX_KEY_FILE_BYTES = 4096
# Flags that exist only on some systems: refuse a symbolic link at the last component, never
# block on a FIFO, no newline translation on Windows.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_BINARY", 0)
)
# Where the file's reader cannot name the Windows half's start as the user gave it (the
# Windows half itself: its own command line); the WSL2 half names it (`key_fix_from_wsl`).
_RECREATE_FIX = (
    "delete it and start the Windows half again as before (it makes a new one), "
    "then restart the WSL2 half"
)


class KeyProblem(enum.Enum):
    MISSING = "missing"
    DENIED = "denied"
    BAD_PATH = "bad path"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    NOT_A_FILE = "not a file"
    EMPTY = "empty"
    TOO_LARGE = "too large"
    DAMAGED = "damaged"


class KeyFileError(ActionableError):
    """The key file cannot be used; `problem` says how, for callers that fix it their way."""

    def __init__(self, problem: KeyProblem, what: str, fix: str) -> None:
        super().__init__(what, fix)
        self.problem = problem


def windows_key_path(environ: Mapping[str, str]) -> Path:
    """Where the Windows half keeps the key by default."""
    local_app_data = environ.get("LOCALAPPDATA")
    if not local_app_data:
        raise ActionableError(
            "LOCALAPPDATA is not set, so there is no place for the link key",
            "pass --key-file PATH",
        )
    return Path(local_app_data) / KEY_DIR / KEY_NAME


def _owner(status: os.stat_result) -> str:
    if sys.platform == "win32":  # no users by number there; the mode says little either
        return "another user"
    import pwd  # noqa: PLC0415 (Unix only; this module is imported on Windows too)

    try:
        return pwd.getpwuid(status.st_uid).pw_name
    except KeyError:
        return f"uid {status.st_uid}"


def _denied(path: Path, status: os.stat_result | None) -> KeyFileError:
    if status is None:  # a directory on the way may not be entered
        return KeyFileError(
            KeyProblem.DENIED,
            f"no permission to look into the folder of the link key at {path}",
            "run this as a user who may (e.g. with sudo), or pass --key-file PATH",
        )
    owner = _owner(status)
    return KeyFileError(
        KeyProblem.DENIED,
        f"no permission to read the link key at {path} "
        f"(mode {stat.S_IMODE(status.st_mode):04o}, owner {owner})",
        f"run this as {owner} (e.g. with sudo), or pass --key-file PATH",
    )


def _missing(path: Path) -> KeyFileError:
    return KeyFileError(
        KeyProblem.MISSING,
        f"no link key at {path}",
        "run `tailscale-wsl2.exe up` on Windows first (it creates the key), "
        "or pass --key-file PATH",
    )


def _unusable_path(path: Path, exc: OSError | ValueError) -> KeyFileError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return KeyFileError(
        KeyProblem.BAD_PATH,
        f"cannot read the link key at {path}: {reason}",
        "pass --key-file with the path of the key file",
    )


def _lstat(path: Path) -> os.stat_result:
    try:
        return path.lstat()
    except FileNotFoundError:
        raise _missing(path) from None
    except PermissionError:
        raise _denied(path, None) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise _unusable_path(path, exc) from None


_FILE_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _symlink(path: Path) -> KeyFileError:
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return KeyFileError(
            KeyProblem.SYMLINK,
            f"the link key at {path} is a symbolic link to nothing that exists",
            "pass --key-file with the path of the key file itself",
        )
    return KeyFileError(
        KeyProblem.SYMLINK,
        f"the link key at {path} is a symbolic link (to {target}): only a regular file is read, "
        "so that no other file can pass for the key",
        f"pass the file itself: --key-file {target}",
    )


def _check_kind(path: Path, status: os.stat_result) -> None:
    """Raise KeyFileError unless `status` is a regular file of a key's size."""
    mode = status.st_mode
    if stat.S_ISLNK(mode):
        raise _symlink(path)
    if stat.S_ISDIR(mode):
        raise KeyFileError(
            KeyProblem.DIRECTORY,
            f"{path} is a folder, not the link key file",
            f"pass the key file in it: --key-file {path / KEY_NAME}",
        )
    if not stat.S_ISREG(mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise KeyFileError(
            KeyProblem.NOT_A_FILE,
            f"{path} is {kind}, not a link key file",
            "pass --key-file with the path of the key file",
        )
    if status.st_size == 0:
        raise KeyFileError(KeyProblem.EMPTY, f"the link key file {path} is empty", _RECREATE_FIX)
    if status.st_size > MAX_KEY_FILE_BYTES:
        raise _too_large(path, f"{status.st_size} bytes")


def _too_large(path: Path, size: str) -> KeyFileError:
    return KeyFileError(
        KeyProblem.TOO_LARGE,
        f"{path} holds {size}: not a link key ({KEY_BYTES * 2} hex digits)",
        "pass --key-file with the path of the key file",
    )


def _open(path: Path, status: os.stat_result) -> int:
    try:
        return os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise _missing(path) from None
    except PermissionError:
        raise _denied(path, status) from None
    except OSError as exc:
        if stat.S_ISLNK(_lstat(path).st_mode):  # replaced by a link since the look (ELOOP)
            raise _symlink(path) from None
        raise _unusable_path(path, exc) from None


def _read_bounded(path: Path, descriptor: int) -> bytes:
    """At most MAX_KEY_FILE_BYTES from the open file (it may have grown since it was looked at)."""
    received = bytearray()
    while chunk := os.read(descriptor, MAX_KEY_FILE_BYTES + 1 - len(received)):
        received += chunk
        if len(received) > MAX_KEY_FILE_BYTES:
            raise _too_large(path, f"more than {MAX_KEY_FILE_BYTES} bytes")
    return bytes(received)


def _read_key_file(path: Path) -> bytes:
    """The bytes of the regular file at `path`; KeyFileError for anything else."""
    status = _lstat(path)
    _check_kind(path, status)
    descriptor = _open(path, status)
    try:
        _check_kind(path, os.fstat(descriptor))  # the file opened is the file looked at
        return _read_bounded(path, descriptor)
    except OSError as exc:
        raise _unusable_path(path, exc) from None
    finally:
        os.close(descriptor)


def _parse_key(text: str, path: Path) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if not text.strip():
        raise KeyFileError(KeyProblem.EMPTY, f"the link key file {path} is empty", _RECREATE_FIX)
    if len(key) != KEY_BYTES:
        raise KeyFileError(
            KeyProblem.DAMAGED,
            f"the link key in {path} is damaged (expected {KEY_BYTES * 2} hex digits)",
            _RECREATE_FIX,
        )
    return key


def key_fix_from_wsl(problem: KeyProblem, windows_up: str) -> str | None:
    """The WSL2 half's fix for a key file with `problem`, naming the Windows half's start as
    the user gave it (`windows_up`, with their --key-file as Windows names it); None where the
    key file's own fix stands."""
    if problem is KeyProblem.MISSING:
        return f"run `{windows_up}` on Windows first (it creates the key)"
    if problem in (KeyProblem.EMPTY, KeyProblem.DAMAGED):
        return (
            f"delete it, restart the Windows half with `{windows_up}` (it makes a new one), "
            "then start this half again"
        )
    return None


def load_key(path: Path) -> bytes:
    """The WSL2 half's read of the key: it never creates one."""
    return _parse_key(_read_key_file(path).decode("ascii", errors="replace"), path)


def current_user_sid() -> str:
    """The SID of the user this process runs as, from its token (Windows only)."""
    if sys.platform != "win32":
        raise OSError("user SIDs exist only on Windows")
    import ctypes  # noqa: PLC0415 (Windows only)
    from ctypes import wintypes  # noqa: PLC0415

    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.GetCurrentProcess.argtypes = ()
    kernel32.GetCurrentProcess.restype = wintypes.HANDLE
    advapi32.OpenProcessToken.argtypes = (
        wintypes.HANDLE,
        wintypes.DWORD,
        ctypes.POINTER(wintypes.HANDLE),
    )
    advapi32.GetTokenInformation.argtypes = (
        wintypes.HANDLE,
        ctypes.c_int,
        wintypes.LPVOID,
        wintypes.DWORD,
        ctypes.POINTER(wintypes.DWORD),
    )
    advapi32.ConvertSidToStringSidW.argtypes = (wintypes.LPVOID, ctypes.POINTER(wintypes.LPWSTR))
    kernel32.LocalFree.argtypes = (wintypes.LPVOID,)
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)

    def check(succeeded: int) -> None:
        if not succeeded:
            raise ctypes.WinError(ctypes.get_last_error())

    token = wintypes.HANDLE()
    token_query, token_user = 0x0008, 1
    check(advapi32.OpenProcessToken(kernel32.GetCurrentProcess(), token_query, ctypes.byref(token)))
    try:
        # TOKEN_USER: a pointer to the SID, then the SID itself.
        buffer = ctypes.create_string_buffer(256)
        size = wintypes.DWORD()
        check(advapi32.GetTokenInformation(token, token_user, buffer, 256, ctypes.byref(size)))
        sid = ctypes.cast(buffer, ctypes.POINTER(wintypes.LPVOID))[0]
        text = wintypes.LPWSTR()
        check(advapi32.ConvertSidToStringSidW(sid, ctypes.byref(text)))
        try:
            return str(text.value)
        finally:
            kernel32.LocalFree(text)
    finally:
        kernel32.CloseHandle(token)


def icacls_argv(path: Path, sid: str, environ: Mapping[str, str]) -> list[str]:
    """Drop inherited access to `path` and give full control to the user `sid` alone."""
    # %LOCALAPPDATA% inherits the profile's ACL (the user, SYSTEM and the Administrators
    # group); the key needs the user alone. `*SID` names the account by SID.
    # By absolute path: the .exe often runs from Downloads, where a planted icacls.exe would
    # otherwise be found first.
    icacls = windows_system_tool("icacls", environ) or "icacls"
    return [icacls, str(path), "/inheritance:r", "/grant:r", f"*{sid}:F"]


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no output")


Lockdown = Callable[[Path], None]


def restrict_to_owner(
    path: Path,
    *,
    run: RunCommand = run_command,
    user_sid: Callable[[], str] = current_user_sid,
    environ: Mapping[str, str] = os.environ,
    platform: str = sys.platform,
) -> None:
    """Make `path` readable by its owner only (on Windows: the user's SID alone, through
    icacls); raises ActionableError, one line, when that cannot be done."""
    if platform != "win32":
        os.chmod(path, 0o600)
        return
    fix = f'check who may change that folder with: icacls "{path.parent}"'
    try:
        sid = user_sid()
    except OSError as exc:
        raise ActionableError(
            f"cannot make the link key private: this process's user is unknown ({exc})", fix
        ) from None
    argv = icacls_argv(path, sid, environ)
    answer = run(argv)
    if answer is None or answer.returncode != 0:
        why = "it could not be run" if answer is None else _first_line(answer.output)
        raise ActionableError(
            f"cannot make the link key private to you: icacls failed ({why})", fix
        )


def _create_key(path: Path, lockdown: Lockdown) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    key = secrets.token_bytes(KEY_BYTES)
    # Written and locked down under a temporary name, then renamed, so the key
    # is never readable by others and never half-written at `path`.
    try:
        with open(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            out.write(key.hex() + "\n")
        lockdown(staging)
        os.replace(staging, path)
    except BaseException:
        # A key that could not be locked down is never used, nor left for the next try.
        staging.unlink(missing_ok=True)
        raise
    return key


def load_or_create_key(path: Path, *, lockdown: Lockdown = restrict_to_owner) -> bytes:
    """The Windows half's key: the one at `path`, or a new one written there."""
    try:
        return load_key(path)
    except KeyFileError as exc:
        if exc.problem is not KeyProblem.MISSING:
            raise
    try:
        return _create_key(path, lockdown)
    except OSError as exc:
        raise KeyFileError(
            KeyProblem.BAD_PATH,
            f"cannot create the link key at {path}: {exc.strerror or exc}",
            "pass --key-file with a path in a folder you may write to",
        ) from None


# Where a Windows user's key lives as WSL sees drive C; `*` is the user's folder.
_KEY_ON_DRIVE_C = f"c/Users/*/AppData/Local/{KEY_DIR}/{KEY_NAME}"


def key_files_on_drive_c() -> list[Path]:
    """The link keys of every Windows user on drive C, found through WSL's automount root."""
    root = Path(automount_root(this_system().wsl_conf_text()))
    try:
        return sorted(root.glob(_KEY_ON_DRIVE_C))
    except OSError:
        return []


def _cannot_find_key(reason: str, existing: Sequence[Path]) -> ActionableError:
    what = f"cannot find the link key: asking Windows for LOCALAPPDATA failed ({reason})"
    if len(existing) == 1:
        return ActionableError(what, f"pass --key-file {shlex.quote(str(existing[0]))}")
    if existing:
        keys = ", ".join(shlex.quote(str(path)) for path in existing)
        return ActionableError(what, f"pass --key-file with yours of: {keys}")
    # No key on drive C yet: once the Windows half made it, this names its path.
    return ActionableError(
        what, f"run `{PROGRAM}.exe install` on Windows first (it makes the key), then this again"
    )


def _interop_answer(
    run: RunCommand, argv: Sequence[str], existing: Callable[[], Sequence[Path]]
) -> str:
    answer = run(argv)
    if answer is None:
        raise _cannot_find_key(f"{argv[0]} could not be run", existing())
    if answer.returncode != 0:
        raise _cannot_find_key(f"{argv[0]} exited with status {answer.returncode}", existing())
    return answer.output.strip()


def find_key_from_wsl(
    run: RunCommand = run_command,
    existing: Callable[[], Sequence[Path]] = key_files_on_drive_c,
) -> Path:
    """The Windows half's key file as a Linux path, found through WSL interop; when interop
    fails, the fix names the key files `existing` finds."""
    # chcp 65001: cmd.exe otherwise prints in the OEM code page, which garbles a user name
    # outside ASCII.
    local_app_data = _interop_answer(
        run, ["cmd.exe", "/d", "/c", "chcp 65001 >nul & echo %LOCALAPPDATA%"], existing
    )
    # An unset variable comes back verbatim, percent signs and all.
    if not local_app_data or "%" in local_app_data:
        raise _cannot_find_key(f"cmd.exe answered {local_app_data!r}", existing())
    linux_dir = _interop_answer(run, ["wslpath", "-u", local_app_data], existing)
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
