"""Installing the Windows half: what is there now, the firewall step, the plan.

The plan itself is `plan.plan_windows_install`'s; this module reads what it needs through one
seam (`WindowsHost`: the environment, a command runner, this program, the running copy, the
look-ups `up` uses) and adds what only the machine can say:

- the task that exists now (`schtasks /Query /XML`: the same in every Windows language);
- the firewall step, for the installed program's path, so that its first listen is allowed
  and Windows never shows its own prompt. The subnet is the one `up` will accept peers from,
  found as `up` finds it: no rule for loopback (mirrored networking, `--listen 127.0.0.1`);
  none when the rule is right already, so that an upgrade asks for nothing; otherwise one
  elevated `netsh` (one UAC prompt), adding the rule or updating it in place;
- what the task runs (`windows_program`): the frozen .exe's copy, or, installed with pipx or
  uv, that venv's pythonw.exe in place. The rule then names the program Windows sees
  listening: the base interpreter's pythonw.exe when the venv's is a redirector (found from
  this process's own image, which is the base python.exe in that case).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv4Network
from pathlib import PureWindowsPath

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.facts import FIREWALL_RULE_NAME
from tailscale_wsl2.link.key import windows_key_path
from tailscale_wsl2.plan.commands import WINDOWS_PROGRAM
from tailscale_wsl2.plan.halves import Discoverers, Options, WindowsHalf, plan_half
from tailscale_wsl2.system import RunCommand as RunCommandSeam
from tailscale_wsl2.system import windows_system_tool
from tailscale_wsl2.windows.firewall import (
    RuleSpec,
    add_rule_argv,
    delete_rule_argv,
    show_rule_argv,
    update_rule_argv,
)
from tailscale_wsl2.windows.firewall_rules import parse_firewall_rules, rule_covers
from tailscale_wsl2.wsl.side import Side

from .paths import rotated_log_files, windows_paths
from .plan import (
    Again,
    InstallPlan,
    RemoveDirectory,
    RunCommand,
    WindowsFacts,
    WindowsProgram,
    plan_windows_install,
    plan_windows_uninstall,
)
from .running import RunningCopy, check_not_started_by_hand
from .windows_task import query_task_xml_argv

__all__ = [
    "WindowsHost",
    "firewall_rule_is_right",
    "plan_install",
    "plan_uninstall",
    "read_windows_facts",
    "windows_program",
]


@dataclass(frozen=True)
class WindowsHost:
    """What installing the Windows half reads of the machine; tests pass canned ones."""

    environ: Mapping[str, str]
    run: RunCommandSeam
    executable: str | None  # this program's .exe when frozen (or --windows-exe), else None
    running: RunningCopy | None
    discoverers: Discoverers
    # Not frozen: sys.executable (a venv's python.exe, for pipx and uv), the file this process
    # runs as (the base interpreter's, behind a venv's redirector), and a file-exists check.
    python: str
    image: str
    exists: Callable[[str], bool]


def read_windows_facts(host: WindowsHost) -> WindowsFacts:
    answer = host.run(query_task_xml_argv(host.environ))
    # No task: schtasks exits 1. Wine's schtasks exits 0 and prints nothing for /Query.
    found = answer is not None and answer.returncode == 0 and "<Task" in answer.output
    return WindowsFacts(host.environ, answer.output if found and answer else None)


def _netsh(argv: list[str], environ: Mapping[str, str]) -> tuple[str, ...]:
    # By absolute path in the plan too, so that --dry-run shows the program that will run.
    return (windows_system_tool(argv[0], environ) or argv[0], *argv[1:])


def firewall_rule_is_right(netsh_output: str, spec: RuleSpec) -> bool:
    """Whether the one rule named FIREWALL_RULE_NAME lets `spec.program` in as `spec` says."""
    rules = [rule for rule in parse_firewall_rules(netsh_output) if rule.name == FIREWALL_RULE_NAME]
    if len(rules) != 1 or spec.program is None:
        return False
    rule = rules[0]
    return (
        rule.action.lower() == "allow"
        and rule_covers(rule, spec.port, spec.subnet, spec.program)
        and PureWindowsPath(rule.program) == PureWindowsPath(spec.program)
    )


def _show_rule(host: WindowsHost) -> tuple[bool, str]:
    answer = host.run(show_rule_argv())
    if answer is None:
        raise ActionableError(
            "could not run netsh to read the firewall rule",
            "run install from a normal Windows session (cmd or PowerShell)",
        )
    # netsh's exit status, not its (translated) text: 0 when a rule of that name exists.
    return answer.returncode == 0, answer.output


def firewall_step(spec: RuleSpec, host: WindowsHost) -> RunCommand | None:
    """The elevated netsh command that makes the rule right, or None when it is right."""
    exists, output = _show_rule(host)
    if exists and firewall_rule_is_right(output, spec):
        return None
    argv = update_rule_argv(spec) if exists else add_rule_argv(spec)
    return RunCommand(_netsh(argv, host.environ), elevated=True)


def _accepted_subnet(options: Options, host: WindowsHost) -> IPv4Network | None:
    """The subnet the installed half will accept WSL2 from; None for loopback."""
    half = plan_half(
        replace(options, side="windows", wait_for_wsl=False),
        Side.WINDOWS,
        host.discoverers,
        host.environ,
    )
    assert isinstance(half, WindowsHalf)
    subnets = [
        place.allowed_peers
        for place in half.places()
        if isinstance(place.allowed_peers, IPv4Network) and not place.allowed_peers.is_loopback
    ]
    return subnets[0] if subnets else None


def _pythonw(python: str) -> str:
    return str(PureWindowsPath(python).with_name("pythonw.exe"))


def windows_program(host: WindowsHost) -> WindowsProgram:
    """The frozen .exe to copy; else this venv's pythonw.exe, run in place by the task."""
    if host.executable is not None:
        return WindowsProgram(host.executable)
    program = WindowsProgram(_pythonw(host.python), image=_pythonw(host.image))
    for path in dict.fromkeys((program.executable, program.listening_image(""))):
        if not host.exists(path):
            raise ActionableError(
                f"the logon task runs the Windows half with this Python's windowless "
                f"interpreter, and there is no {path}",
                f"download the release's {WINDOWS_PROGRAM} (README, Download) and run "
                f"`{WINDOWS_PROGRAM} install` with it",
            )
    return program


def plan_install(
    options: Options, up_options: tuple[str, ...], host: WindowsHost, *, force: bool = False
) -> InstallPlan:
    """The whole Windows install: program, firewall rule, logon task (running `up` with
    `up_options`), started now; on a machine with it installed, the same as an upgrade."""
    paths = windows_paths(host.environ)
    program = windows_program(host)
    check_not_started_by_hand(host.running, program.task_command(paths.exe)[0], windows=True)
    facts = read_windows_facts(host)
    subnet = _accepted_subnet(options, host)
    listening = program.listening_image(paths.exe)
    firewall = (
        None if subnet is None else firewall_step(RuleSpec(options.port, subnet, listening), host)
    )
    return plan_windows_install(
        program, facts, force=force, up_options=up_options, firewall=firewall
    )


def plan_uninstall(host: WindowsHost, *, force: bool = False, purge: bool = False) -> InstallPlan:
    """Task, firewall rule and program; with `purge`, the link key and the logs too."""
    paths = windows_paths(host.environ)
    facts = read_windows_facts(host)
    exists, _ = _show_rule(host)
    firewall = RunCommand(_netsh(delete_rule_argv(), host.environ), elevated=True)
    purged: list[str] = []
    if purge:
        # PureWindowsPath: the same text whichever platform computes it (tests run on Linux).
        key = PureWindowsPath(windows_key_path(host.environ))
        purged = [str(key), *rotated_log_files(paths.log_file)]
    plan = plan_windows_uninstall(
        host.executable,
        facts,
        force=force,
        firewall=firewall if exists else None,
        purge=purged,
        again=Again((WINDOWS_PROGRAM, "uninstall", *(["--purge"] if purge else [])), "windows"),
    )
    if not purge:
        return plan
    key_dir = PureWindowsPath(purged[0]).parent
    folders = (RemoveDirectory(paths.log_dir), RemoveDirectory(str(key_dir)))
    return replace(plan, steps=(*plan.steps, *folders))
