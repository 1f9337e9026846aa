"""`tailscale-wsl2 doctor`: wire the real system into the checks, run them, print the results.

The side is chosen as `up` chooses it (`--side`, else detection); on a system that is neither
Windows nor WSL, or with `--side` naming the half of the other system (each half's checks read
its own system: services and adapters, or /proc and /etc), the explanation becomes the one
failing result, in text and JSON alike.

Findings quote paths as the user typed them, and a path need not be UTF-8: its bytes go out as
they came in (the text), or as U+FFFD where JSON cannot hold them, never as a traceback.
"""

import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import trio

from tailscale_wsl2 import __version__
from tailscale_wsl2.doctor.model import (
    Result,
    exit_status,
    failure,
    render_json,
    render_text,
    run_checks,
)
from tailscale_wsl2.doctor.system import peer_process
from tailscale_wsl2.doctor.windows_checks import WINDOWS_CHECKS, WindowsContext, WindowsSystem
from tailscale_wsl2.doctor.wsl_checks import WSL_CHECKS, WslContext, WslSystem
from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.link.key import find_key_from_wsl
from tailscale_wsl2.net.connect import open_stream
from tailscale_wsl2.plan.commands import windows_doctor_command, wsl_doctor_command
from tailscale_wsl2.plan.halves import HalfName, Options, half_for
from tailscale_wsl2.plan.lookups import system_discoverers
from tailscale_wsl2.system import read_text_if_present, run_command
from tailscale_wsl2.windows.firewall import read_firewall_here, running_image
from tailscale_wsl2.wsl.side import Side, read_networking_mode, read_side

__all__ = ["Report", "run_doctor"]


@dataclass(frozen=True)
class Report:
    side: str
    results: list[Result]


def _wsl_system(detected: Side) -> WslSystem:
    return WslSystem(
        side=detected,
        kernel_release=platform.release(),
        read_file=read_text_if_present,
        networking_mode=read_networking_mode,
        which=shutil.which,
        run=run_command,
        connect=open_stream,
        discoverers=system_discoverers(detected),
        find_key_file=find_key_from_wsl,
        peer_process=peer_process,
        environ=os.environ,
    )


def _windows_system() -> WindowsSystem:
    return WindowsSystem(
        release=platform.release(),
        version=platform.version(),
        environ=os.environ,
        path_exists=Path.exists,
        run=run_command,
        discoverers=system_discoverers(Side.WINDOWS),
        connect=open_stream,
        read_firewall=read_firewall_here,
        image=running_image(),
    )


async def _diagnose(half: HalfName, options: Options, timeout: float, detected: Side) -> Report:
    if half == "wsl":
        wsl = WslContext(options, timeout, _wsl_system(detected))
        return Report(half, await run_checks(WSL_CHECKS, wsl))
    windows = WindowsContext(options, timeout, _windows_system())
    return Report(half, await run_checks(WINDOWS_CHECKS, windows))


def other_system(half: HalfName, options: Options, platform: str) -> Result | None:
    """The one failing result for checks of a half that does not run on `platform`."""
    if half == "windows" and platform != "win32":
        what = "the Windows half's checks read Windows (its services, adapters and firewall)"
        fix = f"run `{windows_doctor_command(options, from_wsl=False)}` in Windows"
    elif half == "wsl" and platform == "win32":
        what = "the WSL2 half's checks read the Linux of WSL2 (/proc, /etc, its socket)"
        fix = f"run `{wsl_doctor_command(options)}` inside WSL2"
    else:
        return None
    return Result("platform", failure(f"{what}, and this is {_system_name(platform)}", fix))


def _system_name(platform: str) -> str:
    return "Windows" if platform == "win32" else f"not Windows ({platform})"


def diagnose(options: Options, timeout: float) -> Report:
    """Run the checks for the chosen side; a plain Linux system, or a half of the other
    system, gets one failing result."""
    detected = read_side()
    try:
        half = half_for(options, detected)
    except ActionableError as exc:
        return Report(detected.value, [Result("platform", failure(exc.what, exc.fix or ""))])
    if (refused := other_system(half, options, sys.platform)) is not None:
        return Report(half, [refused])
    return trio.run(_diagnose, half, options, timeout, detected)


def _printable(text: str, encoding: str, *, as_json: bool) -> bytes:
    """`text` for stdout: a path's undecodable bytes as they were (surrogate escapes), except
    in JSON, which must stay valid UTF-8; what the console cannot show, escaped."""
    if as_json:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    try:
        return text.encode(encoding, "surrogateescape")
    except UnicodeEncodeError:
        return text.encode(encoding, "backslashreplace")


def _print(text: str, *, as_json: bool) -> None:
    encoding = sys.stdout.encoding or "utf-8"
    sys.stdout.flush()
    sys.stdout.buffer.write(_printable(text + "\n", encoding, as_json=as_json))
    sys.stdout.buffer.flush()


def run_doctor(
    options: Options, *, timeout: float, as_json: bool, verbose: bool, colour: bool = False
) -> int:
    """Print the diagnosis (`colour`: marks and summary in colour); the exit status is 1 when any
    check failed or crashed."""
    report = diagnose(options, timeout)
    if as_json:
        _print(render_json(report.results, side=report.side, version=__version__), as_json=True)
    else:
        encoding = sys.stdout.encoding or "utf-8"
        text = render_text(report.results, verbose=verbose, encoding=encoding, colour=colour)
        _print(text, as_json=False)
    return exit_status(report.results)
