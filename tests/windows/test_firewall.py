"""The firewall rule: exact netsh command lines, `up`'s warning, and the add/update/remove flows
through fake netsh, elevation and UAC seams. The CLI says in one line that it is for Windows."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network

import pytest
from typer.testing import CliRunner

from tailscale_wsl2.cli.app import app
from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.system import CommandResult
from tailscale_wsl2.windows.firewall import (
    FirewallSystem,
    RuleSpec,
    add_or_update_rule,
    add_rule_argv,
    command_line,
    delete_rule_argv,
    firewall_warning,
    remove_rule,
    show_rule,
    show_rule_argv,
    this_program,
    update_rule_argv,
)
from tests.support.doctor_fakes import fixture
from tests.support.netsh import rule_block

SUBNET = IPv4Network("172.27.64.0/20")
EXE = r"C:\Users\me\bin\tailscale-wsl2.exe"
SPEC = RuleSpec(41113, SUBNET, EXE)
SCOPE = [
    "dir=in",
    "action=allow",
    "protocol=TCP",
    "localport=41113",
    "remoteip=172.27.64.0/20",
    "profile=any",
    "edge=no",
    "enable=yes",
]


def test_add_rule_argv() -> None:
    assert add_rule_argv(SPEC) == [
        *["netsh", "advfirewall", "firewall", "add", "rule", "name=tailscale-wsl2"],
        *SCOPE,
        f"program={EXE}",
    ]


def test_update_rule_argv_selects_by_name_and_sets_everything_anew() -> None:
    assert update_rule_argv(RuleSpec(5000, IPv4Network("172.22.16.0/20"), None)) == [
        *["netsh", "advfirewall", "firewall", "set", "rule", "name=tailscale-wsl2", "dir=in"],
        "new",
        *[arg.replace("41113", "5000").replace("172.27.64.0", "172.22.16.0") for arg in SCOPE],
    ]


def test_delete_and_show_argv() -> None:
    assert delete_rule_argv() == [
        "netsh",
        "advfirewall",
        "firewall",
        "delete",
        "rule",
        "name=tailscale-wsl2",
    ]
    assert show_rule_argv() == [
        *["netsh", "advfirewall", "firewall", "show", "rule", "name=tailscale-wsl2", "verbose"]
    ]


def test_command_line_quotes_a_program_path_with_spaces() -> None:
    spec = RuleSpec(41113, SUBNET, r"C:\Program Files\tailscale-wsl2\tailscale-wsl2.exe")
    assert command_line(add_rule_argv(spec)).endswith(
        r'edge=no enable=yes "program=C:\Program Files\tailscale-wsl2\tailscale-wsl2.exe"'
    )


def test_the_rule_is_for_any_program_when_run_from_source() -> None:
    assert this_program() is None


# --- up's warning -----------------------------------------------------------------------------


def netsh_answers(text: str | None) -> "FakeRun":
    return FakeRun({"show": None if text is None else CommandResult(0, text)})


@dataclass
class FakeRun:
    """netsh by verb (add, set, delete, show): its answer; records the command lines."""

    answers: dict[str, CommandResult | None]
    ran: list[list[str]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str]) -> CommandResult | None:
        self.ran.append(list(argv))
        return self.answers.get(argv[3], CommandResult(0, "Ok."))


def test_no_warning_when_a_rule_allows_it() -> None:
    rules = fixture("windows/netsh-rules.txt") + rule_block()
    assert firewall_warning(SPEC, netsh_answers(rules)) is None


def test_one_line_with_the_fix_when_no_rule_allows_it() -> None:
    warning = firewall_warning(SPEC, netsh_answers(fixture("windows/netsh-rules.txt")))
    assert warning == (
        "no firewall rule lets WSL2 in (TCP 41113 from 172.27.64.0/20), so WSL2 cannot connect; "
        "run `tailscale-wsl2.exe firewall add --subnet 172.27.64.0/20` (it asks for elevation "
        "once), or in an elevated PowerShell: "
        "netsh advfirewall firewall add rule name=tailscale-wsl2 dir=in action=allow protocol=TCP "
        "localport=41113 remoteip=172.27.64.0/20 profile=any edge=no enable=yes "
        rf"program={EXE}"
    )


def test_a_block_rule_is_named() -> None:
    rules = rule_block() + "\n" + rule_block(**{"Rule Name": "Lockdown", "Action": "Block"})
    warning = firewall_warning(SPEC, netsh_answers(rules))
    assert warning is not None
    assert warning.startswith("the firewall rule 'Lockdown' blocks WSL2 (TCP 41113 from")


@pytest.mark.parametrize("output", [None, "Règle: pas en anglais\n"])
def test_no_warning_on_a_guess(output: str | None) -> None:
    assert firewall_warning(SPEC, netsh_answers(output)) is None


# --- firewall add / remove / show -------------------------------------------------------------

EXISTS = CommandResult(0, rule_block())
MISSING = CommandResult(1, "No rules match the specified criteria.")


def system(
    run: FakeRun, *, admin: bool = False, uac: int | None = 0
) -> tuple[FirewallSystem, list[list[str]]]:
    elevated: list[list[str]] = []

    def run_elevated(argv: Sequence[str]) -> int | None:
        elevated.append(list(argv))
        return uac

    return FirewallSystem(run=run, is_admin=lambda: admin, run_elevated=run_elevated), elevated


def test_add_asks_uac_to_add_when_there_is_no_rule() -> None:
    fake, elevated = system(FakeRun({"show": MISSING}))
    assert add_or_update_rule(SPEC, fake) == (
        f"added firewall rule 'tailscale-wsl2': TCP 41113 from 172.27.64.0/20 to {EXE}"
    )
    assert elevated == [add_rule_argv(SPEC)]


def test_add_again_updates_the_rule_in_place() -> None:
    fake, elevated = system(FakeRun({"show": EXISTS}))
    assert add_or_update_rule(SPEC, fake).startswith("updated firewall rule 'tailscale-wsl2'")
    assert elevated == [update_rule_argv(SPEC)]


def test_elevated_already_runs_netsh_directly() -> None:
    run = FakeRun({"show": MISSING})
    fake, elevated = system(run, admin=True)
    add_or_update_rule(SPEC, fake)
    assert run.ran == [show_rule_argv(), add_rule_argv(SPEC)]
    assert elevated == []


def test_declined_elevation_gives_the_command_for_an_elevated_shell() -> None:
    fake, _ = system(FakeRun({"show": MISSING}), uac=None)
    with pytest.raises(ActionableError) as caught:
        add_or_update_rule(SPEC, fake)
    assert str(caught.value) == (
        "changing the firewall needs administrator rights, and elevation was declined; "
        "in an elevated shell (Run as administrator), run: " + command_line(add_rule_argv(SPEC))
    )


def test_netsh_failing_is_one_line() -> None:
    run = FakeRun({"show": MISSING, "add": CommandResult(1, "\nThe parameter is incorrect.\n")})
    fake, _ = system(run, admin=True)
    with pytest.raises(
        ActionableError, match=r"^netsh failed: The parameter is incorrect\.; in an"
    ):
        add_or_update_rule(SPEC, fake)
    fake, _ = system(FakeRun({"show": MISSING}), uac=5)
    with pytest.raises(ActionableError, match=r"^netsh failed with exit status 5; in an elevated"):
        add_or_update_rule(SPEC, fake)


def test_remove_deletes_only_what_exists() -> None:
    fake, elevated = system(FakeRun({"show": EXISTS}))
    assert remove_rule(fake) == "removed firewall rule 'tailscale-wsl2'"
    assert elevated == [delete_rule_argv()]
    fake, elevated = system(FakeRun({"show": MISSING}))
    assert remove_rule(fake) == "no firewall rule 'tailscale-wsl2': nothing to remove"
    assert elevated == []


def test_show_prints_netsh_or_how_to_add() -> None:
    assert show_rule(system(FakeRun({"show": EXISTS}))[0]).startswith("Rule Name:")
    assert show_rule(system(FakeRun({"show": MISSING}))[0]) == (
        "no firewall rule 'tailscale-wsl2'; add it with `tailscale-wsl2.exe firewall add`"
    )
    with pytest.raises(ActionableError, match="could not run netsh"):
        show_rule(system(FakeRun({"show": None}))[0])


@pytest.mark.parametrize(
    "command", [["add"], ["add", "--subnet", "10.0.0.0/8"], ["remove"], ["show"]]
)
def test_the_cli_says_it_is_for_windows(command: list[str]) -> None:
    result = CliRunner().invoke(app, ["firewall", *command])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "tailscale-wsl2: firewall commands are for Windows; "
        "run `tailscale-wsl2.exe firewall ...` in Windows (PowerShell or cmd)"
    ]
