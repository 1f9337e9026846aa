"""Carrying out an InstallPlan: the one place install changes the system.

The steps run in order and stop at the first failure, each through the `System` seam, so tests
run plans against a recording fake and `LocalSystem` against a temporary directory. Files are
written whole to a temporary name beside their destination and renamed over it, so a crash or
a full disk never leaves half a unit or half of /etc/wsl.conf behind.
"""

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

from tailscale_wsl2.errors import ActionableError

from .plan import CopyFile, InstallPlan, RemoveFile, RunCommand, WriteFile

__all__ = ["LocalSystem", "System", "apply_plan"]


class System(Protocol):
    def write(self, path: str, data: bytes, mode: int) -> None: ...

    def copy(self, source: str, destination: str, mode: int) -> None: ...

    def remove(self, path: str) -> None: ...

    def run(self, argv: Sequence[str]) -> int: ...


def apply_plan(plan: InstallPlan, system: System) -> None:
    """Run every step; a command that fails (and may not) stops the rest, as one line."""
    for step in plan.steps:
        if isinstance(step, WriteFile):
            system.write(step.path, step.data, step.mode)
        elif isinstance(step, CopyFile):
            system.copy(step.source, step.destination, step.mode)
        elif isinstance(step, RemoveFile):
            system.remove(step.path)
        else:
            _run(system, step)


def _run(system: System, step: RunCommand) -> None:
    status = system.run(step.argv)
    if status != 0 and not step.may_fail:
        raise ActionableError(
            f"`{' '.join(step.argv)}` failed (exit status {status})",
            "see its message above; once fixed, run the same command again",
        )


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
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def _cannot(verb: str, path: str, exc: OSError) -> ActionableError:
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

    def remove(self, path: str) -> None:
        try:
            Path(path).unlink(missing_ok=True)
        except OSError as exc:
            raise _cannot("remove", path, exc) from None

    def run(self, argv: Sequence[str]) -> int:
        try:
            return subprocess.run(argv, check=False).returncode
        except OSError as exc:
            raise ActionableError(
                f"cannot run {argv[0]}: {exc.strerror}", "check that it is installed there"
            ) from None
