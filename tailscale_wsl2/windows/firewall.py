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
`run_elevated` (the UAC prompt, `_windows_elevation.py`). Not elevated and refused (or no
prompt possible), the exact command for an elevated shell is the fix. Reading the rules
reuses doctor's parser and coverage test, so `up`'s warning and `doctor` agree.
"""

import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.facts import DEFAULT_PORT, FIREWALL_RULE_NAME, PROGRAM
from tailscale_wsl2.system import RunCommand
from tailscale_wsl2.windows.firewall_rules import firewall_coverage

__all__ = [
    "SHOW_RULES",
    "FirewallSystem",
    "RuleSpec",
    "add_or_update_rule",
    "add_rule_argv",
    "add_rule_fix",
    "command_line",
    "delete_rule_argv",
    "firewall_add_command",
    "firewall_warning",
    "remove_rule",
    "show_rule",
    "show_rule_argv",
    "this_program",
    "update_rule_argv",
]

NETSH_RULES = ["netsh", "advfirewall", "firewall"]
# Every inbound rule, for the coverage verdict (firewall_rules.py).
SHOW_RULES = [*NETSH_RULES, "show", "rule", "name=all", "dir=in", "verbose"]


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


def firewall_warning(spec: RuleSpec, run: RunCommand) -> str | None:
    """One line when no enabled inbound rule lets TCP `spec.port` in from `spec.subnet` (or one
    blocks it), else None. Rules netsh prints in another language cannot be read: None then too,
    as `up` must not warn on a guess (`doctor` says it could not tell)."""
    port, subnet = spec.port, spec.subnet
    answer = run(SHOW_RULES)
    coverage = firewall_coverage(answer.output if answer else None, port, subnet)
    if coverage.verdict == "blocked":
        return (
            f"the firewall rule {coverage.rule!r} blocks WSL2 (TCP {port} from {subnet}); "
            "disable it or narrow it in wf.msc (Inbound Rules)"
        )
    if coverage.verdict == "missing":
        return (
            f"no firewall rule lets WSL2 in (TCP {port} from {subnet}), so WSL2 cannot connect; "
            + add_rule_fix(spec)
        )
    return None


@dataclass(frozen=True)
class FirewallSystem:
    """The seams: netsh unelevated, whether we are elevated, and netsh through the UAC prompt
    (its exit status; None when the prompt was declined or cannot be shown)."""

    run: RunCommand
    is_admin: Callable[[], bool]
    run_elevated: Callable[[Sequence[str]], int | None]


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no output")


def _change(argv: Sequence[str], system: FirewallSystem) -> None:
    """Run a rule-changing netsh command with the rights it needs, or say how to."""
    elevated_shell = f"in an elevated shell (Run as administrator), run: {command_line(argv)}"
    if system.is_admin():
        answer = system.run(argv)
        if answer is None:
            raise ActionableError("could not run netsh", elevated_shell)
        if answer.returncode != 0:
            raise ActionableError(f"netsh failed: {_first_line(answer.output)}", elevated_shell)
        return
    status = system.run_elevated(argv)
    if status is None:
        raise ActionableError(
            "changing the firewall needs administrator rights, and elevation was declined",
            elevated_shell,
        )
    if status != 0:
        raise ActionableError(f"netsh failed with exit status {status}", elevated_shell)


def _rule_exists(system: FirewallSystem) -> bool:
    # netsh's exit status, not its (localized) text: 0 when a rule of that name exists.
    answer = system.run(show_rule_argv())
    if answer is None:
        raise ActionableError("could not run netsh", "check that netsh runs in a Windows shell")
    return answer.returncode == 0


def add_or_update_rule(spec: RuleSpec, system: FirewallSystem) -> str:
    """Create the rule, or update it in place when it exists; returns what was done."""
    if _rule_exists(system):
        _change(update_rule_argv(spec), system)
        done = "updated"
    else:
        _change(add_rule_argv(spec), system)
        done = "added"
    program = spec.program or "any program"
    rule = f"firewall rule {FIREWALL_RULE_NAME!r}"
    return f"{done} {rule}: TCP {spec.port} from {spec.subnet} to {program}"


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
