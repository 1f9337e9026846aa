"""Installing the WSL2 half: what is there now, the options the service runs with, the plan.

The plan itself is `plan.plan_wsl_install`'s; this module reads what it needs through one seam
(`WslHost`) and decides what only the machine can say:

- systemd runs (`/run/systemd/system` exists: systemd's own test), or will at WSL's next start,
  or the boot command of /etc/wsl.conf starts the half instead;
- a `tailscaled` from the `tailscale` package is enabled or running (it would take the socket);
- the link key's path, resolved now through WSL interop (`cmd.exe`, found by
  `system.run_command` even under sudo), so that nothing at boot needs interop, which is not
  there then;
- the socket's group: the user behind `sudo` (SUDO_GID), recorded in the unit;
- a copy started by hand that holds the socket (`running.py`).

Changing /etc and /usr/local/bin needs root; without it install says so in one line, with the
same command under `sudo`. `--dry-run` needs no root: it only reads.
"""

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.link.key import find_key_from_wsl
from tailscale_wsl2.plan.commands import windows_drive_path
from tailscale_wsl2.plan.halves import socket_group
from tailscale_wsl2.system import RunCommand as RunCommandSeam
from tailscale_wsl2.system import find_first

from .paths import SYSTEMCTL_CANDIDATES, WSL_LOG, WSL_UNIT, rotated_log_files
from .plan import (
    TAILSCALED,
    Again,
    InstallPlan,
    RemoveFile,
    RunCommand,
    WslFacts,
    WslProgram,
    plan_wsl_install,
    plan_wsl_uninstall,
)
from .running import RunningCopy, check_not_started_by_hand
from .wslconf import WSL_CONF, BootPath, choose_boot_path

__all__ = [
    "SYSTEMD_RUNNING",
    "WslHost",
    "WslRequest",
    "check_windows_exe",
    "plan_install",
    "plan_uninstall",
    "read_wsl_facts",
]

# systemd creates this directory when it boots as PID 1 (sd_booted(3)).
SYSTEMD_RUNNING = "/run/systemd/system"
_IN_THE_WAY = {
    "is-enabled": ("enabled", "enabled-runtime"),
    "is-active": ("active", "activating", "reloading"),
}


@dataclass(frozen=True)
class WslHost:
    """What installing the WSL2 half reads of the machine; tests pass canned ones."""

    read_bytes: Callable[[str], bytes | None]  # None: no such file
    exists: Callable[[str], bool]
    run: RunCommandSeam
    euid: int
    environ: Mapping[str, str]
    wsl1: bool
    program: WslProgram
    running: RunningCopy | None


@dataclass(frozen=True)
class WslRequest:
    """What the user asked `install` or `uninstall` for."""

    command: tuple[str, ...]  # the command line after the program, for the `sudo` fix
    up_options: tuple[str, ...] = ()  # recorded for the service's `up`
    key_file: Path | None = None  # --key-file, absolute
    insecure: bool = False
    force: bool = False
    disable_tailscaled: bool = False
    purge: bool = False
    dry_run: bool = False
    # The .exe's own install (or uninstall) through interop (--windows-exe), or None.
    windows_command: tuple[str, ...] | None = None


def _text(host: WslHost, path: str) -> str | None:
    data = host.read_bytes(path)
    # surrogateescape: bytes that are not UTF-8 are written back as they came.
    return None if data is None else data.decode("utf-8", "surrogateescape")


def _first_word(answer_output: str) -> str:
    return next(iter(answer_output.split()), "")


def _tailscaled_in_the_way(host: WslHost, systemctl: str | None) -> bool:
    if systemctl is None:
        return False
    for verb, states in _IN_THE_WAY.items():
        answer = host.run((systemctl, verb, TAILSCALED))
        if answer is not None and _first_word(answer.output) in states:
            return True
    return False


def read_wsl_facts(host: WslHost) -> WslFacts:
    systemctl = find_first(SYSTEMCTL_CANDIDATES, host.exists)
    return WslFacts(
        wsl_conf_text=_text(host, WSL_CONF),
        unit_text=_text(host, WSL_UNIT),
        systemd_running=host.exists(SYSTEMD_RUNNING),
        tailscaled_enabled=_tailscaled_in_the_way(host, systemctl),
        systemctl=systemctl,
        wsl1=host.wsl1,
    )


def _again(request: WslRequest, host: WslHost) -> Again:
    """The command as the user ran it, under sudo: what a fix runs again."""
    return Again(("sudo", *host.program.command, *request.command))


def _require_root(request: WslRequest, host: WslHost, what: str) -> None:
    if host.euid == 0 or request.dry_run:
        return
    command = shlex.join(_again(request, host).words)
    raise ActionableError(f"{what} the WSL2 half needs root (it changes /etc)", f"run `{command}`")


def check_windows_exe(path: str, exists: Callable[[str], bool]) -> None:
    """`--windows-exe` names the release's .exe, which WSL interop can run."""
    if not path.lower().endswith(".exe") or not exists(path):
        raise ActionableError(
            f"--windows-exe {path}: no such .exe",
            "pass the path of tailscale-wsl2.exe as WSL sees it, "
            "e.g. /mnt/c/Users/NAME/Downloads/tailscale-wsl2.exe",
        )


def _key_file_options(request: WslRequest, host: WslHost) -> tuple[tuple[str, ...], list[str]]:
    """`--key-file PATH` resolved now (none when given or unused), and a note when missing."""
    if request.key_file is not None or request.insecure:
        return (), []
    key = find_key_from_wsl(host.run)
    notes = []
    if not host.exists(str(key)):
        notes.append(
            f"no link key at {key} yet: it appears when the Windows half first runs "
            "(`tailscale-wsl2.exe install` on Windows, or --windows-exe here)"
        )
    return ("--key-file", str(key)), notes


def _check_key_on_a_windows_drive(request: WslRequest) -> None:
    """The Windows half installed from here starts at logon, before WSL does: a key file
    inside the distro would be out of its reach then."""
    key = request.key_file
    if request.windows_command and key is not None and windows_drive_path(key) is None:
        raise ActionableError(
            f"--key-file {key} is not on a Windows drive: the Windows half starts at logon, "
            "before WSL, and could not read it",
            "keep the key under /mnt/c, or leave --key-file out (both halves then use the key "
            "in the Windows user's profile)",
        )


def plan_install(request: WslRequest, host: WslHost) -> InstallPlan:
    """The whole WSL2 install, after the Windows half's when `request.windows_command`."""
    _require_root(request, host, "installing")
    _check_key_on_a_windows_drive(request)
    facts = read_wsl_facts(host)
    key_options, notes = _key_file_options(request, host)
    gid = socket_group(host.environ)
    plan = plan_wsl_install(
        host.program,
        ("up", *request.up_options, *key_options),
        gid,
        facts,
        force=request.force,
        disable_tailscaled=request.disable_tailscaled,
        again=_again(request, host),
    )
    path = choose_boot_path(
        facts.wsl_conf_text, systemd_running=facts.systemd_running, wsl1=facts.wsl1
    )
    installed = host.program.installed_command()[0]
    if path is BootPath.SYSTEMD and facts.systemd_running:
        check_not_started_by_hand(host.running, installed, windows=False)
    elif host.running is not None:
        notes.append(
            f"tailscale-wsl2 runs now (pid {host.running.pid}) and keeps running "
            "until WSL stops; the installed copy takes over at WSL's next start"
        )
    if gid is None:
        notes.append(
            "no SUDO_GID: the socket's group is root's; run install through sudo from your "
            "user so that your group may use the socket"
        )
    windows = (RunCommand(request.windows_command),) if request.windows_command else ()
    return replace(plan, steps=(*windows, *plan.steps), notes=(*notes, *plan.notes))


def plan_uninstall(request: WslRequest, host: WslHost) -> InstallPlan:
    """The unit or boot command, the installed binary; with --purge, the boot log too."""
    _require_root(request, host, "uninstalling")
    facts = read_wsl_facts(host)
    plan = plan_wsl_uninstall(host.program, facts, force=request.force, again=_again(request, host))
    purged = tuple(RemoveFile(path) for path in rotated_log_files(WSL_LOG)) if request.purge else ()
    windows = (RunCommand(request.windows_command),) if request.windows_command else ()
    # Removing what is not there is no step: a dry run shows only what uninstall changes.
    steps = tuple(
        step
        for step in (*plan.steps, *purged, *windows)
        if not isinstance(step, RemoveFile) or host.exists(step.path)
    )
    notes = plan.notes if steps else ("nothing of tailscale-wsl2 is installed here",)
    return replace(plan, steps=steps, notes=notes)
