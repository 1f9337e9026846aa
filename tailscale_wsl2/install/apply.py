"""Carrying out an InstallPlan: the one place install changes the system.

The steps run in order and stop at the first failure, each through the `System` seam, so tests
run plans against a recording fake and `LocalSystem` against a temporary directory. Files are
written whole to a temporary name beside their destination and renamed over it, so a crash or
a full disk never leaves half a unit or half of /etc/wsl.conf behind.

On Windows a program file cannot be replaced while a process runs it, and an upgrade has just
ended the old copy's task: its processes take a moment to exit (the relay drains its
connections first), so replacing a program is retried for a few seconds there.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path, PureWindowsPath
from typing import BinaryIO, Protocol

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.system import resolve_program

from .plan import CopyFile, InstallPlan, RemoveDirectory, RemoveFile, RunCommand, WriteFile
from .windowless import windowless_copy

__all__ = ["LocalSystem", "System", "apply_plan"]

# How long a program file in use on Windows is waited for (the old copy exiting).
REPLACE_RETRY_SECONDS = 15.0


class System(Protocol):
    def write(self, path: str, data: bytes, mode: int) -> None: ...

    def copy(self, source: str, destination: str, mode: int) -> None: ...

    def copy_windowless(self, source: str, destination: str, mode: int) -> None: ...

    def remove(self, path: str) -> None: ...

    def remove_directory(self, path: str) -> None: ...

    def run(self, argv: Sequence[str]) -> int: ...

    # The exit status, or None when elevation was declined or is not possible.
    def run_elevated(self, argv: Sequence[str]) -> int | None: ...


def apply_plan(plan: InstallPlan, system: System) -> None:
    """Run every step; a command that fails (and may not) stops the rest, as one line."""
    for step in plan.steps:
        if isinstance(step, WriteFile):
            system.write(step.path, step.data, step.mode)
        elif isinstance(step, CopyFile):
            copy = system.copy_windowless if step.windowless else system.copy
            copy(step.source, step.destination, step.mode)
        elif isinstance(step, RemoveFile):
            system.remove(step.path)
        elif isinstance(step, RemoveDirectory):
            system.remove_directory(step.path)
        else:
            _run(system, step)


def _command_line(argv: Sequence[str]) -> str:
    return subprocess.list2cmdline(argv) if sys.platform == "win32" else " ".join(argv)


def _run(system: System, step: RunCommand) -> None:
    if step.elevated:
        status = system.run_elevated(step.argv)
        if status is None:
            raise ActionableError(
                "this step needs administrator rights, and elevation was declined",
                f"in an elevated shell (Run as administrator), run: {_command_line(step.argv)}; "
                "then run install again",
            )
    else:
        status = system.run(step.argv)
    if status != 0 and not step.may_fail:
        raise ActionableError(
            f"`{_command_line(step.argv)}` failed (exit status {status})",
            "see its message above; once fixed, run the same command again",
        )


def _rename_over(staging: str, path: Path) -> None:
    deadline = time.monotonic() + REPLACE_RETRY_SECONDS
    while True:
        try:
            os.replace(staging, path)
        except PermissionError:
            # Windows: the program is still running (see the module's docstring).
            if sys.platform != "win32" or time.monotonic() > deadline:
                raise
            time.sleep(0.25)
        else:
            return


def _replace_atomically(path: Path, fill: Callable[[BinaryIO], object], mode: int) -> None:
    """Fill a new file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            fill(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(staging, mode)
        _rename_over(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def _cannot(verb: str, path: str, exc: OSError, platform: str = sys.platform) -> ActionableError:
    if platform == "win32" and isinstance(exc, PermissionError) and path.lower().endswith(".exe"):
        # Still in use after the retries: a copy of the installed program started by hand.
        name = PureWindowsPath(path).name
        return ActionableError(
            f"cannot {verb} {path}: the program is running",
            f"end it (`taskkill /IM {name} /F` in a shell), then run install again",
        )
    fix = (
        "run it as root (sudo) or as Administrator"
        if isinstance(exc, PermissionError)
        else "check the path"
    )
    return ActionableError(f"cannot {verb} {path}: {exc.strerror}", fix)


class LocalSystem:
    """The real system: files by atomic replacement, commands with their output shown."""

    def write(self, path: str, data: bytes, mode: int) -> None:
        try:
            _replace_atomically(Path(path), lambda file: file.write(data), mode)
        except OSError as exc:
            raise _cannot("write", path, exc) from None

    def copy(self, source: str, destination: str, mode: int) -> None:
        try:
            original = open(source, "rb")  # noqa: SIM115 (closed below, errors told apart)
        except OSError as exc:
            raise _cannot("read", source, exc) from None
        with original:
            try:
                _replace_atomically(
                    Path(destination), lambda file: shutil.copyfileobj(original, file), mode
                )
            except OSError as exc:
                raise _cannot("write", destination, exc) from None

    def copy_windowless(self, source: str, destination: str, mode: int) -> None:
        try:
            image = Path(source).read_bytes()
        except OSError as exc:
            raise _cannot("read", source, exc) from None
        patched = windowless_copy(image, source)
        self.write(destination, patched, mode)

    def remove(self, path: str) -> None:
        try:
            Path(path).unlink(missing_ok=True)
        except OSError as exc:
            raise _cannot("remove", path, exc) from None

    def remove_directory(self, path: str) -> None:
        try:
            Path(path).rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            pass  # not empty: what is left there is not install's to remove

    def run(self, argv: Sequence[str]) -> int:
        command = [resolve_program(argv[0]), *argv[1:]]
        try:
            return subprocess.run(command, check=False).returncode
        except OSError as exc:
            raise ActionableError(
                f"cannot run {argv[0]}: {exc.strerror}", "check that it is installed there"
            ) from None

    def run_elevated(self, argv: Sequence[str]) -> int | None:
        if sys.platform != "win32":
            raise ActionableError(
                "only Windows asks for elevation", "run the Windows half's install on Windows"
            )
        from tailscale_wsl2.windows.elevation import is_admin, run_elevated  # noqa: PLC0415

        return self.run(argv) if is_admin() else run_elevated(argv)
