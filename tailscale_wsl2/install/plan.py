"""InstallPlan: every file install writes (whole content) and every command it runs, in order.

A plan is computed from values only: the options, and facts the caller read from the system
(the text of /etc/wsl.conf and of an existing unit, whether systemd runs, an existing task's
XML). So `install --dry-run` prints exactly what `install` would do (`render_dry_run`), tests
compare plans for real-world inputs, and `apply.apply_plan` is the only part that touches the
system. Refusals (a unit someone edited, a wsl.conf WSL cannot read, tailscaled in the way) are
raised while planning, before anything is changed.
"""

import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PureWindowsPath
from typing import Literal

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.plan.commands import WINDOWS_PROGRAM

from .paths import SYSTEMCTL_CANDIDATES, WSL_BINARY, WSL_LOG, WSL_UNIT, windows_paths
from .systemd import (
    UNIT_NAME,
    UnitSpec,
    check_may_overwrite,
    check_may_remove,
    classify_unit,
    render_unit,
)
from .windows_task import (
    TaskDefinition,
    create_task_argv,
    delete_task_argv,
    end_task_argv,
    parse_task_xml,
    run_task_argv,
    task_xml,
    task_xml_bytes,
    windows_user_id,
)
from .wslconf import (
    WSL_CONF,
    BootPath,
    boot_command_segment,
    choose_boot_path,
    merge_boot_command,
    remove_boot_command,
)

__all__ = [
    "RUN_AS_MODULE",
    "Again",
    "CopyFile",
    "InstallPlan",
    "RemoveDirectory",
    "RemoveFile",
    "RunCommand",
    "Step",
    "WindowsFacts",
    "WindowsProgram",
    "WriteFile",
    "WslFacts",
    "WslProgram",
    "plan_windows_install",
    "plan_windows_uninstall",
    "plan_wsl_install",
    "plan_wsl_uninstall",
    "render_dry_run",
]

TAILSCALED = "tailscaled.service"
RESTART_WSL = (
    "WSL reads /etc/wsl.conf when it starts: run `wsl --shutdown` in Windows, then open WSL again"
)


@dataclass(frozen=True)
class WriteFile:
    """Write `data` to `path` (replacing it whole); `text` is what a dry run shows of it."""

    path: str
    text: str
    data: bytes
    mode: int = 0o644

    @classmethod
    def utf8(cls, path: str, text: str, mode: int = 0o644) -> "WriteFile":
        # surrogateescape: bytes of the user's file that are not UTF-8 go back as they came.
        return cls(path, text, text.encode("utf-8", "surrogateescape"), mode)


@dataclass(frozen=True)
class CopyFile:
    source: str
    destination: str
    mode: int = 0o755
    # Windows: the copy is marked as a program without a console window (windowless.py).
    windowless: bool = False


@dataclass(frozen=True)
class RemoveFile:
    """Remove `path`; a missing file is already removed."""

    path: str


@dataclass(frozen=True)
class RemoveDirectory:
    """Remove the directory `path` if it is empty (install made it; the user may have not)."""

    path: str


@dataclass(frozen=True)
class RunCommand:
    argv: tuple[str, ...]
    # True for commands whose failure changes nothing that matters (ending a task not running).
    may_fail: bool = False
    # Windows: run with administrator rights, through the UAC prompt unless already elevated.
    elevated: bool = False


Step = WriteFile | CopyFile | RemoveFile | RemoveDirectory | RunCommand


@dataclass(frozen=True)
class InstallPlan:
    steps: tuple[Step, ...]
    # Said after the steps: what the user still has to do, and why.
    notes: tuple[str, ...] = ()
    shell: Literal["posix", "windows"] = "posix"

    @property
    def files(self) -> list[WriteFile]:
        return [step for step in self.steps if isinstance(step, WriteFile)]

    @property
    def commands(self) -> list[tuple[str, ...]]:
        return [step.argv for step in self.steps if isinstance(step, RunCommand)]


def _command_line(argv: Sequence[str], shell: str) -> str:
    return subprocess.list2cmdline(argv) if shell == "windows" else shlex.join(argv)


def render_dry_run(plan: InstallPlan) -> str:
    """Every step, files with their whole content and commands as one would type them."""
    out: list[str] = []

    def mode(bits: int) -> str:
        # Windows files have an ACL, not these bits: the mode would say nothing true there.
        return f" (mode {bits:04o})" if plan.shell == "posix" else ""

    for step in plan.steps:
        if isinstance(step, WriteFile):
            out.append(f"--- write {step.path}{mode(step.mode)} ---")
            out.append(step.text if step.text.endswith("\n") else step.text + "\n(no newline)\n")
            out.append(f"--- end of {step.path} ---")
        elif isinstance(step, CopyFile):
            windowless = ", marked windowless (no console window)" if step.windowless else ""
            out.append(f"copy {step.source} to {step.destination}{mode(step.mode)}{windowless}")
        elif isinstance(step, RemoveFile):
            out.append(f"remove {step.path}")
        elif isinstance(step, RemoveDirectory):
            out.append(f"remove the folder {step.path} if it is empty")
        else:
            how = "run elevated (one UAC prompt)" if step.elevated else "run"
            suffix = "   (may fail: nothing to stop)" if step.may_fail else ""
            out.append(f"{how}: {_command_line(step.argv, plan.shell)}{suffix}")
    out.extend(f"note: {note}" for note in plan.notes)
    return "\n".join(line.rstrip("\n") for line in out) + "\n"


@dataclass(frozen=True)
class Again:
    """The command the user ran, as words, for a fix that runs it again with one option more:
    a fix that dropped the user's options would install something else when copied."""

    words: tuple[str, ...]
    shell: Literal["posix", "windows"] = "posix"

    def adding(self, option: str) -> str:
        return _command_line((*self.words, option), self.shell)


# How a service runs the package from a pipx/uv venv. -P: the service's working directory (/ or
# System32) is not put on sys.path, so nothing there can stand in for the package.
RUN_AS_MODULE = ("-P", "-m", "tailscale_wsl2")


@dataclass(frozen=True)
class WslProgram:
    """How this program runs now: `(exe,)` when frozen, `(python, *RUN_AS_MODULE)`."""

    command: tuple[str, ...]
    frozen: bool

    def installed_command(self) -> tuple[str, ...]:
        """What the service runs: the installed copy of a frozen binary, else this command."""
        return (WSL_BINARY,) if self.frozen else self.command

    def copy_step(self) -> list[Step]:
        if not self.frozen or self.command[0] == WSL_BINARY:
            return []
        return [CopyFile(self.command[0], WSL_BINARY, 0o755)]


@dataclass(frozen=True)
class WslFacts:
    """What the caller read from the WSL2 system."""

    wsl_conf_text: str | None
    unit_text: str | None
    systemd_running: bool
    tailscaled_enabled: bool
    systemctl: str | None  # found among SYSTEMCTL_CANDIDATES
    wsl1: bool = False


def _systemctl(facts: WslFacts) -> str:
    if facts.systemctl is None:
        raise ActionableError(
            f"systemd is in use but systemctl is in neither {' nor '.join(SYSTEMCTL_CANDIDATES)}",
            "install systemd's systemctl (`sudo apt-get install systemd`), then run install again",
        )
    return facts.systemctl


def _enable_steps(systemctl: str, running: bool) -> list[Step]:
    if not running:
        # No manager to talk to yet (systemd=true takes effect at WSL's next start):
        # --root=/ makes systemctl set up the unit's links in the file system itself.
        return [RunCommand((systemctl, "--root=/", "enable", UNIT_NAME))]
    return [
        RunCommand((systemctl, "daemon-reload")),
        RunCommand((systemctl, "enable", UNIT_NAME)),
        # restart, not start: an older version of the service may be running.
        RunCommand((systemctl, "restart", UNIT_NAME)),
    ]


def _without_our_boot_command(facts: WslFacts) -> list[Step]:
    new_text = remove_boot_command(facts.wsl_conf_text)
    if new_text is None:
        return []
    return [WriteFile.utf8(WSL_CONF, new_text) if new_text.strip() else RemoveFile(WSL_CONF)]


def plan_wsl_install(
    program: WslProgram,
    up_arguments: Sequence[str],
    socket_gid: int | None,
    facts: WslFacts,
    *,
    force: bool = False,
    disable_tailscaled: bool = False,
    again: Again = Again(("sudo", "tailscale-wsl2", "install")),
) -> InstallPlan:
    """Install the WSL2 half: as a systemd service, or as WSL's boot command without systemd.
    `again` is the install command as the user ran it, for the fixes."""
    command = program.installed_command()
    arguments = (*command[1:], *up_arguments)
    path = choose_boot_path(
        facts.wsl_conf_text, systemd_running=facts.systemd_running, wsl1=facts.wsl1
    )
    if path is BootPath.BOOT_COMMAND:
        log_arguments = (*arguments, "--log-file", WSL_LOG)
        # The WSL2 half gives its socket to SUDO_GID's group, as under sudo.
        environment = {} if socket_gid is None else {"SUDO_GID": str(socket_gid)}
        segment = boot_command_segment(command[0], log_arguments, WSL_LOG, environment)
        forced = again.adding("--force")
        new_text = merge_boot_command(facts.wsl_conf_text, segment, force=force, forced=forced)
        steps = [*program.copy_step()]
        if new_text != facts.wsl_conf_text:
            steps.append(WriteFile.utf8(WSL_CONF, new_text))
        return InstallPlan(tuple(steps), (f"{RESTART_WSL} (it starts the WSL2 half)",))
    systemctl = _systemctl(facts)
    if facts.tailscaled_enabled and not disable_tailscaled:
        raise ActionableError(
            "tailscaled is enabled in this distro and would serve the socket the WSL2 half serves",
            f"run `{again.adding('--disable-tailscaled')}` (it stops and disables it)",
        )
    check_may_overwrite(classify_unit(facts.unit_text), WSL_UNIT, force, again.adding("--force"))
    unit = render_unit(UnitSpec(command[0], arguments, socket_gid))
    steps = [*program.copy_step()]
    if facts.tailscaled_enabled:
        steps.append(RunCommand((systemctl, "disable", "--now", TAILSCALED)))
    steps.append(WriteFile.utf8(WSL_UNIT, unit))
    steps += _enable_steps(systemctl, facts.systemd_running)
    steps += _without_our_boot_command(facts)  # else it would start a second copy at boot
    notes = () if facts.systemd_running else (f"{RESTART_WSL} (systemd then starts the unit)",)
    return InstallPlan(tuple(steps), notes)


def plan_wsl_uninstall(
    program: WslProgram,
    facts: WslFacts,
    *,
    force: bool = False,
    again: Again = Again(("sudo", "tailscale-wsl2", "uninstall")),
) -> InstallPlan:
    """Undo install: the unit (if ours), our part of the boot command, the installed binary."""
    steps: list[Step] = []
    if facts.unit_text is not None:
        forced = again.adding("--force")
        check_may_remove(classify_unit(facts.unit_text), WSL_UNIT, force, forced)
        systemctl = _systemctl(facts)
        if facts.systemd_running:
            steps += [
                RunCommand((systemctl, "disable", "--now", UNIT_NAME)),
                RemoveFile(WSL_UNIT),
                RunCommand((systemctl, "daemon-reload")),
            ]
        else:
            steps += [
                RunCommand((systemctl, "--root=/", "disable", UNIT_NAME)),
                RemoveFile(WSL_UNIT),
            ]
    boot_steps = _without_our_boot_command(facts)
    steps += boot_steps
    if program.frozen:
        steps.append(RemoveFile(WSL_BINARY))
    notes = [f"{RESTART_WSL} (the running WSL2 half stops then)"] if boot_steps else []
    if facts.unit_text is not None and not facts.tailscaled_enabled:
        notes.append("tailscaled stays off; `sudo systemctl enable --now tailscaled` starts it")
    return InstallPlan(tuple(steps), tuple(notes))


@dataclass(frozen=True)
class WindowsProgram:
    """What the logon task runs, and the program Windows sees listening (the firewall's).

    Frozen (`image` None): `executable` is the .exe, copied windowless to the per-user place
    and run from there. Installed with pipx or uv: `executable` is that venv's pythonw.exe (the
    windowless interpreter, so that no console window opens at logon), run as
    `pythonw.exe -m tailscale_wsl2`, nothing copied; `image` is the interpreter that process
    runs as, which a venv's redirector makes the base Python's pythonw.exe."""

    executable: str
    image: str | None = None  # None: frozen

    @property
    def frozen(self) -> bool:
        return self.image is None

    def task_command(self, installed_exe: str) -> tuple[str, tuple[str, ...]]:
        """(the program the task runs, the words before `up`)."""
        if self.frozen:
            return installed_exe, ()
        return self.executable, RUN_AS_MODULE

    def listening_image(self, installed_exe: str) -> str:
        return installed_exe if self.image is None else self.image


@dataclass(frozen=True)
class WindowsFacts:
    """What the caller read on Windows."""

    environ: Mapping[str, str] = field(repr=False)
    existing_task_xml: str | bytes | None  # `schtasks /Query /XML` output; None: no task


def _same_windows_path(first: str, second: str) -> bool:
    return PureWindowsPath(first) == PureWindowsPath(second)  # compared without case


def _check_task_is_ours(facts: WindowsFacts, force: bool, action: str) -> None:
    if force or facts.existing_task_xml is None:
        return
    if not parse_task_xml(facts.existing_task_xml).written_by_install:
        raise ActionableError(
            "a scheduled task named tailscale-wsl2 exists that install did not create",
            f"keep it, or {action}",
        )


def plan_windows_install(
    program: WindowsProgram,
    facts: WindowsFacts,
    *,
    force: bool = False,
    up_options: Sequence[str] = (),
    firewall: RunCommand | None = None,
) -> InstallPlan:
    """Install the Windows half: copy the program (windowless; not for pipx or uv, whose
    pythonw.exe runs in place), let it through the firewall (`firewall`: the netsh command,
    None when the rule is right already), register the logon task that runs `up` with
    `up_options`, start it."""
    again = Again((WINDOWS_PROGRAM, "install", *up_options), "windows")
    _check_task_is_ours(facts, force, f"replace it with `{again.adding('--force')}`")
    paths = windows_paths(facts.environ)
    command, before_up = program.task_command(paths.exe)
    definition = TaskDefinition(
        user_id=windows_user_id(facts.environ),
        command=command,
        arguments=(*before_up, "up", *up_options, "--log-file", paths.log_file),
    )
    steps: list[Step] = []
    if facts.existing_task_xml is not None:
        # A running copy holds the program file open; it must stop before the copy replaces it.
        steps.append(RunCommand(tuple(end_task_argv(facts.environ)), may_fail=True))
    if program.frozen and not _same_windows_path(program.executable, paths.exe):
        steps.append(CopyFile(program.executable, paths.exe, windowless=True))
    if firewall is not None:
        # Before the task can first listen, so that Windows never asks about the firewall.
        steps.append(firewall)
    steps += [
        WriteFile(paths.task_xml, task_xml(definition), task_xml_bytes(definition)),
        RunCommand(tuple(create_task_argv(facts.environ, paths.task_xml))),
        RemoveFile(paths.task_xml),
        RunCommand(tuple(run_task_argv(facts.environ))),
    ]
    return InstallPlan(tuple(steps), shell="windows")


def plan_windows_uninstall(
    running_exe: str | None,
    facts: WindowsFacts,
    *,
    force: bool = False,
    firewall: RunCommand | None = None,
    purge: Sequence[str] = (),
    again: Again = Again((WINDOWS_PROGRAM, "uninstall"), "windows"),
) -> InstallPlan:
    """Stop and delete the task, the firewall rule (`firewall`: the netsh command, None when
    there is none), then the installed program (unless it is the one running) and, with
    --purge, the files in `purge` (the link key, the logs)."""
    _check_task_is_ours(facts, force, f"delete it with `{again.adding('--force')}`")
    paths = windows_paths(facts.environ)
    steps: list[Step] = []
    if facts.existing_task_xml is not None:
        steps += [
            RunCommand(tuple(end_task_argv(facts.environ)), may_fail=True),
            RunCommand(tuple(delete_task_argv(facts.environ))),
        ]
    if firewall is not None:
        steps.append(firewall)
    notes: tuple[str, ...] = ()
    if running_exe is not None and _same_windows_path(running_exe, paths.exe):
        # Windows does not delete a program file while it runs.
        notes = (f"delete {paths.exe} once this program has exited",)
    else:
        steps += [RemoveFile(paths.exe), RemoveDirectory(str(PureWindowsPath(paths.exe).parent))]
    steps += [RemoveFile(path) for path in purge]
    return InstallPlan(tuple(steps), notes, shell="windows")
