"""The Windows Defender Firewall rule that lets WSL2 reach the Windows half, and checking for it.

WSL-to-host traffic is inbound on the host, and the vEthernet (WSL) adapter sits in the Public
profile, where inbound is blocked by default. One rule fixes that, scoped as narrowly as the
link allows: inbound, TCP, the Windows half's port, remote addresses in the WSL subnet only,
this program only (when frozen: a source checkout runs as python.exe, which no rule should open
up), every profile, no edge traversal, no UDP. It is named `FIREWALL_RULE_NAME`, the name `doctor`
suggests, so `firewall add` finds and updates the rule whichever made it (after WSL moved to a
new subnet, say) instead of adding a second one.

Strategy: the netsh command lines are pure functions (tested to the argument); running them
goes through seams: `run` (netsh unelevated: `show rule` needs no rights), `is_admin` and
`run_elevated` (the UAC prompt, `elevation.py`). Not elevated and refused (or no prompt
possible), the exact command for an elevated shell is the fix. Reading the firewall
(`read_firewall`) and its verdict (`firewall_rules.py`) are shared by `up`'s warning, `firewall
add` and doctor, and so is the one line each verdict prints (`coverage_problem`).

After adding the rule, `firewall add` reads the firewall again: a rule that does not let WSL2 in
is not reported as done. Windows' first-listen prompt leaves Block rules scoped to the program
that beat the new Allow rule; those, and only those (local, for this program), are removed,
through an elevated PowerShell, when the user consents (asked, or `--remove-blocking`), and
never silently. Anything else that still blocks is named with where to change it.

Listing every rule can take longer than the usual command time limit on a machine with many
rules, so it gets its own (`RULES_TIMEOUT_SECONDS`), and running out of it is its own verdict.
"""

import base64
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Network
from pathlib import PureWindowsPath

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.facts import DEFAULT_PORT, FIREWALL_RULE_NAME, PROGRAM
from tailscale_wsl2.system import (
    CommandResult,
    RunCommand,
    RunCommandTimed,
    TimedOut,
    run_command_timed,
)
from tailscale_wsl2.windows.firewall_rules import (
    Coverage,
    FirewallRule,
    NetshReading,
    firewall_coverage,
)

__all__ = [
    "RULES_TIMEOUT_SECONDS",
    "SHOW_PROFILES",
    "SHOW_RULES",
    "Consent",
    "FirewallSystem",
    "RuleSpec",
    "add_or_update_rule",
    "add_rule_argv",
    "add_rule_fix",
    "command_line",
    "coverage_problem",
    "delete_rule_argv",
    "firewall_add_command",
    "firewall_warning",
    "read_firewall",
    "read_firewall_here",
    "remove_blocking_argv",
    "remove_blocking_script",
    "remove_rule",
    "running_image",
    "show_rule",
    "show_rule_argv",
    "this_program",
    "update_rule_argv",
]

NETSH_RULES = ["netsh", "advfirewall", "firewall"]
# Every inbound rule, for the coverage verdict (firewall_rules.py).
SHOW_RULES = [*NETSH_RULES, "show", "rule", "name=all", "dir=in", "verbose"]
# Each profile's settings as applied, local and policy merged (firewall_rules.py).
SHOW_PROFILES = ["netsh", "advfirewall", "monitor", "show", "firewall"]
# netsh lists a few hundred rules in seconds; thousands (managed machines) take longer.
RULES_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class RuleSpec:
    """What the rule allows: TCP to `port` from `subnet`, for `program` (None: any program)."""

    port: int
    subnet: IPv4Network
    program: str | None


def this_program() -> str | None:
    """The program the rule is for: this executable when frozen; None (any program) when
    running from source, where the executable is a python.exe shared with other programs."""
    return sys.executable if getattr(sys, "frozen", False) else None


def _module_file_name() -> str:
    """The file this process's image was loaded from (Windows), else sys.executable."""
    if sys.platform == "win32":
        import _winapi  # noqa: PLC0415

        return _winapi.GetModuleFileName(0)
    return sys.executable


def running_image(module_file_name: Callable[[], str] = _module_file_name) -> str:
    """The executable this process runs as: the program Windows matches rules against.

    Not always sys.executable: in a venv on Windows (pipx, uv tool) the venv's python.exe and
    pythonw.exe are redirectors that start the base interpreter, and sys.executable names the
    redirector while the process that listens is the base interpreter. So `up`, doctor and
    install ask Windows for the file this process was loaded from."""
    return module_file_name()


def _scope(spec: RuleSpec) -> list[str]:
    program = [f"program={spec.program}"] if spec.program else []
    return [
        "dir=in",
        "action=allow",
        "protocol=TCP",
        f"localport={spec.port}",
        f"remoteip={spec.subnet}",
        "profile=any",
        "edge=no",
        "enable=yes",
        *program,
    ]


def add_rule_argv(spec: RuleSpec) -> list[str]:
    return [*NETSH_RULES, "add", "rule", f"name={FIREWALL_RULE_NAME}", *_scope(spec)]


def update_rule_argv(spec: RuleSpec) -> list[str]:
    # `set rule` selects by name (and direction), then applies what follows `new`.
    return [
        *NETSH_RULES,
        "set",
        "rule",
        f"name={FIREWALL_RULE_NAME}",
        "dir=in",
        "new",
        *_scope(spec),
    ]


def delete_rule_argv() -> list[str]:
    return [*NETSH_RULES, "delete", "rule", f"name={FIREWALL_RULE_NAME}"]


def show_rule_argv() -> list[str]:
    return [*NETSH_RULES, "show", "rule", f"name={FIREWALL_RULE_NAME}", "verbose"]


def command_line(argv: Sequence[str]) -> str:
    """`argv` as one command line for a Windows shell (quoted as Windows programs expect)."""
    return subprocess.list2cmdline(argv)


def firewall_add_command(port: int, subnet: IPv4Network | None) -> str:
    """`firewall add` as a user types it, with their own port and the subnet when known."""
    add = f"{PROGRAM}.exe firewall add"
    if port != DEFAULT_PORT:
        add += f" --port {port}"
    return f"{add} --subnet {subnet}" if subnet else add


def add_rule_fix(spec: RuleSpec) -> str:
    """The fix for a missing rule on Windows: `firewall add`, or the very netsh command it runs."""
    return (
        f"run `{firewall_add_command(spec.port, spec.subnet)}` (it asks for elevation once), "
        f"or in an elevated PowerShell: {command_line(add_rule_argv(spec))}"
    )


def read_firewall(run: RunCommandTimed) -> NetshReading:
    """The rules and the profiles, as netsh prints them (see `NetshReading`)."""
    rules = run(SHOW_RULES)
    profiles = run(SHOW_PROFILES)
    return NetshReading(
        rules=rules.output if isinstance(rules, CommandResult) else None,
        profiles=profiles.output
        if isinstance(profiles, CommandResult) and profiles.returncode == 0
        else None,
        rules_timed_out_after=rules.seconds if isinstance(rules, TimedOut) else None,
    )


def read_firewall_here() -> NetshReading:
    """`read_firewall` with this machine's netsh, and the rules' own time limit."""
    return read_firewall(partial(run_command_timed, timeout=RULES_TIMEOUT_SECONDS))


def _quoted(names: Iterable[str]) -> str:
    # Quoted as they are, not repr()'d: Windows paths keep single backslashes.
    return ", ".join(f"'{name}'" for name in dict.fromkeys(names))


def _prompt_rules_problem(removable: Sequence[FirewallRule], spec: RuleSpec) -> tuple[str, str]:
    programs = _quoted(PureWindowsPath(rule.program).name for rule in removable)
    return (
        f"the Block rules {_quoted(rule.name for rule in removable)} that Windows' firewall "
        f"prompt made for {programs} keep WSL2 out (TCP {spec.port} from {spec.subnet}; "
        "Block wins over Allow)",
        f"run `{firewall_add_command(spec.port, spec.subnet)} --remove-blocking` "
        "(it asks for elevation)",
    )


def _blocked_problem(coverage: Coverage, spec: RuleSpec, image: str) -> tuple[str, str]:
    removable = coverage.removable(image)
    if removable:
        return _prompt_rules_problem(removable, spec)
    traffic = f"TCP {spec.port} from {spec.subnet}"
    if any(rule.from_policy for rule in coverage.blocking):
        return (
            f"the firewall rule {coverage.rule!r}, set by policy, blocks {traffic}",
            f"ask your administrator to allow {traffic} for {PROGRAM}.exe "
            "(a policy's rule cannot be changed on this machine)",
        )
    return (
        f"the firewall rule {coverage.rule!r} blocks {traffic}",
        "disable it or narrow its scope in wf.msc (Inbound Rules): Block rules win over Allow",
    )


def coverage_problem(coverage: Coverage, spec: RuleSpec, image: str) -> tuple[str, str] | None:
    """What keeps WSL2 out, and what to do, for a verdict that does; None when nothing does
    (or when the rules could not be read: that is the caller's to word)."""
    traffic = f"TCP {spec.port} from {spec.subnet}"
    if coverage.verdict == "blocked":
        return _blocked_problem(coverage, spec, image)
    if coverage.verdict == "block-all":
        return (
            "the firewall blocks all incoming connections on Public networks, where WSL2's "
            "adapter is",
            "in an elevated PowerShell: netsh advfirewall set publicprofile firewallpolicy "
            'blockinbound,allowoutbound (or clear "Blocks all incoming connections" under '
            "Windows Security, Firewall & network protection, Public network)",
        )
    if coverage.verdict == "local-rules-ignored":
        return (
            f"policy makes the firewall ignore local rules, so the rule {coverage.rule!r} does "
            f"not let {traffic} in",
            f"ask your administrator to allow {traffic} for {PROGRAM}.exe by policy",
        )
    if coverage.verdict == "missing":
        return f"no firewall rule allows {traffic}", add_rule_fix(spec)
    if coverage.verdict == "timed-out":
        return (
            f"could not check the firewall: netsh gave no answer within {coverage.seconds:g} s",
            f"if WSL2 cannot connect, {add_rule_fix(spec)}",
        )
    return None


def firewall_warning(spec: RuleSpec, image: str, reading: NetshReading) -> str | None:
    """`up`'s one line when the firewall keeps WSL2 out of TCP `spec.port` (or netsh gave no
    answer in time), else None. Rules netsh prints in another language cannot be read: None
    then too, as `up` must not warn on a guess (`doctor` says it could not tell)."""
    coverage = firewall_coverage(reading, spec.port, spec.subnet, image)
    problem = coverage_problem(coverage, spec, image)
    return f"{problem[0]}; {problem[1]}" if problem else None


def _powershell(environ: Mapping[str, str]) -> str:
    # By absolute path, as icacls: a planted powershell.exe beside the .exe must not run elevated.
    system_root = environ.get("SystemRoot") or r"C:\Windows"
    return str(
        PureWindowsPath(system_root, "System32", "WindowsPowerShell", "v1.0", "powershell.exe")
    )


def remove_blocking_script(programs: Sequence[str]) -> str:
    """PowerShell that removes the local inbound Block rules scoped to each of `programs` and
    nothing else (netsh cannot select rules by action: its `delete rule` would take the
    prompt's Allow rules for Private networks along)."""

    def one(program: str) -> str:
        quoted = "'" + program.replace("'", "''") + "'"
        return (
            f"Get-NetFirewallApplicationFilter -Program {quoted} -PolicyStore PersistentStore "
            "| Get-NetFirewallRule "
            "| Where-Object { $_.Direction -eq 'Inbound' -and $_.Action -eq 'Block' } "
            "| Remove-NetFirewallRule"
        )

    return "; ".join(one(program) for program in dict.fromkeys(programs))


def remove_blocking_argv(programs: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The script for `powershell.exe`, encoded, so no quoting stands between it and the
    elevated PowerShell; errors stop it with a non-zero exit status."""
    script = "$ErrorActionPreference = 'Stop'; " + remove_blocking_script(programs)
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    return [_powershell(environ), "-NoProfile", "-NonInteractive", "-EncodedCommand", encoded]


@dataclass(frozen=True)
class FirewallSystem:
    """The seams: netsh unelevated, whether we are elevated, a command through the UAC prompt
    (its exit status; None when the prompt was declined or cannot be shown), reading the
    firewall, this executable's path, and the environment (where Windows is)."""

    run: RunCommand
    is_admin: Callable[[], bool]
    run_elevated: Callable[[Sequence[str]], int | None]
    read: Callable[[], NetshReading]
    image: str
    environ: Mapping[str, str]


# Asked with the Block rules that removing would clear; True: remove them.
Consent = Callable[[Sequence[FirewallRule]], bool]


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no output")


def _change(argv: Sequence[str], system: FirewallSystem, by_hand: str | None = None) -> None:
    """Run a rule-changing command with the rights it needs, or say how to (`by_hand`: that
    fix, when `argv` is not what a user would type)."""
    elevated_shell = (
        by_hand or f"in an elevated shell (Run as administrator), run: {command_line(argv)}"
    )
    if system.is_admin():
        answer = system.run(argv)
        if answer is None:
            raise ActionableError(f"could not run {_program_name(argv)}", elevated_shell)
        if answer.returncode != 0:
            raise ActionableError(
                f"{_program_name(argv)} failed: {_first_line(answer.output)}", elevated_shell
            )
        return
    status = system.run_elevated(argv)
    if status is None:
        raise ActionableError(
            "changing the firewall needs administrator rights, and elevation was declined",
            elevated_shell,
        )
    if status != 0:
        raise ActionableError(
            f"{_program_name(argv)} failed with exit status {status}", elevated_shell
        )


def _program_name(argv: Sequence[str]) -> str:
    return PureWindowsPath(argv[0]).stem


def _rule_exists(system: FirewallSystem) -> bool:
    # netsh's exit status, not its (localized) text: 0 when a rule of that name exists.
    answer = system.run(show_rule_argv())
    if answer is None:
        raise ActionableError("could not run netsh", "check that netsh runs in a Windows shell")
    return answer.returncode == 0


def _remove_prompt_rules(
    removable: Sequence[FirewallRule], system: FirewallSystem, consent: Consent, spec: RuleSpec
) -> str:
    """Remove the prompt's Block rules if the user agrees; what was done, or why not."""
    what, fix = _prompt_rules_problem(removable, spec)
    if not consent(removable):
        raise ActionableError(f"the rule is in place, but {what}", fix)
    programs = [rule.program for rule in removable]
    _change(
        remove_blocking_argv(programs, system.environ),
        system,
        by_hand=f"in an elevated PowerShell, run: {remove_blocking_script(programs)}",
    )
    names, made_for = _quoted(rule.name for rule in removable), _quoted(programs)
    return f"removed the Block rules {names} that Windows' firewall prompt made for {made_for}"


def _check_it_works(spec: RuleSpec, system: FirewallSystem, consent: Consent) -> list[str]:
    """Read the firewall back: what more was done, or an error naming what still blocks."""
    coverage = firewall_coverage(system.read(), spec.port, spec.subnet, system.image)
    removable = coverage.removable(system.image)
    done = []
    if removable:
        done.append(_remove_prompt_rules(removable, system, consent, spec))
        coverage = firewall_coverage(system.read(), spec.port, spec.subnet, system.image)
    problem = coverage_problem(coverage, spec, system.image)
    if coverage.verdict == "timed-out" and problem:
        done.append(problem[0])  # not known to fail: said, not raised
    elif problem:
        raise ActionableError(f"the rule is in place, but {problem[0]}", problem[1])
    return done


def add_or_update_rule(spec: RuleSpec, system: FirewallSystem, consent: Consent) -> str:
    """Create the rule, or update it in place when it exists, then check that WSL2 gets in;
    returns what was done, one line each."""
    if _rule_exists(system):
        _change(update_rule_argv(spec), system)
        done = "updated"
    else:
        _change(add_rule_argv(spec), system)
        done = "added"
    program = spec.program or "any program"
    rule = f"firewall rule {FIREWALL_RULE_NAME!r}"
    lines = [f"{done} {rule}: TCP {spec.port} from {spec.subnet} to {program}"]
    try:
        lines += _check_it_works(spec, system, consent)
    except ActionableError as exc:
        raise ActionableError(f"{lines[0]}; {exc.what}", exc.fix) from None
    return "\n".join(lines)


def remove_rule(system: FirewallSystem) -> str:
    if not _rule_exists(system):
        return f"no firewall rule {FIREWALL_RULE_NAME!r}: nothing to remove"
    _change(delete_rule_argv(), system)
    return f"removed firewall rule {FIREWALL_RULE_NAME!r}"


def show_rule(system: FirewallSystem) -> str:
    answer = system.run(show_rule_argv())
    if answer is None:
        raise ActionableError("could not run netsh", "check that netsh runs in a Windows shell")
    if answer.returncode != 0:
        return f"no firewall rule {FIREWALL_RULE_NAME!r}; add it with `{PROGRAM}.exe firewall add`"
    return answer.output.strip()
