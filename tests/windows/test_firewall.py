"""The firewall rule: exact netsh command lines, `up`'s warning, and the add/update/remove flows
through fake netsh, elevation and UAC seams, including what `firewall add` does after adding:
reading the firewall back, removing the first-listen prompt's Block rules only with consent,
naming what it cannot remove. The CLI says in one line that it is for Windows."""

import base64
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network

import pytest
from typer.testing import CliRunner

from tailscale_wsl2.cli.app import app
from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.system import CommandResult, TimedOut
from tailscale_wsl2.windows.firewall import (
    SHOW_PROFILES,
    SHOW_RULES,
    FirewallSystem,
    RuleSpec,
    add_or_update_rule,
    add_rule_argv,
    command_line,
    delete_rule_argv,
    firewall_warning,
    read_firewall,
    remove_blocking_argv,
    remove_blocking_script,
    remove_rule,
    running_image,
    show_rule,
    show_rule_argv,
    this_program,
    update_rule_argv,
)
from tailscale_wsl2.windows.firewall_rules import FirewallRule, NetshReading
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


# --- reading the firewall, and up's warning --------------------------------------------------

PROFILES = fixture("windows/netsh-monitor-firewall.txt")


def test_the_firewall_is_read_with_both_commands() -> None:
    answers = {
        tuple(SHOW_RULES): CommandResult(0, "rules"),
        tuple(SHOW_PROFILES): CommandResult(0, "profiles"),
    }
    assert read_firewall(lambda argv: answers[tuple(argv)]) == NetshReading("rules", "profiles")
    assert SHOW_PROFILES == ["netsh", "advfirewall", "monitor", "show", "firewall"]


def test_a_listing_that_runs_out_of_time_is_told_apart() -> None:
    def slow(argv: Sequence[str]) -> CommandResult | TimedOut | None:
        return TimedOut(60.0) if argv == SHOW_RULES else CommandResult(1, "The following...")

    assert read_firewall(slow) == NetshReading(None, None, rules_timed_out_after=60.0)


def warning_for(rules: str | None, profiles: str | None = PROFILES) -> str | None:
    return firewall_warning(SPEC, EXE, NetshReading(rules, profiles))


def test_no_warning_when_a_rule_allows_it() -> None:
    assert warning_for(fixture("windows/netsh-rules.txt") + rule_block()) is None


def test_one_line_with_the_fix_when_no_rule_allows_it() -> None:
    warning = warning_for(fixture("windows/netsh-rules.txt"))
    assert warning == (
        "no firewall rule allows TCP 41113 from 172.27.64.0/20; "
        "run `tailscale-wsl2.exe firewall add --subnet 172.27.64.0/20` (it asks for elevation "
        "once), or in an elevated PowerShell: "
        "netsh advfirewall firewall add rule name=tailscale-wsl2 dir=in action=allow protocol=TCP "
        "localport=41113 remoteip=172.27.64.0/20 profile=any edge=no enable=yes "
        rf"program={EXE}"
    )


def test_a_block_rule_is_named() -> None:
    rules = rule_block() + "\n" + rule_block(**{"Rule Name": "Lockdown", "Action": "Block"})
    assert warning_for(rules) == (
        "the firewall rule 'Lockdown' blocks TCP 41113 from 172.27.64.0/20; "
        "disable it or narrow its scope in wf.msc (Inbound Rules): Block rules win over Allow"
    )


def test_the_prompts_block_rules_are_named_with_the_flag_that_removes_them() -> None:
    assert warning_for(fixture("windows/netsh-rules-prompt-blocks.txt")) == (
        "the Block rules 'tailscale-wsl2.exe' that Windows' firewall prompt made for "
        "'tailscale-wsl2.exe' keep WSL2 out (TCP 41113 from 172.27.64.0/20; Block wins over "
        "Allow); run `tailscale-wsl2.exe firewall add --subnet 172.27.64.0/20 --remove-blocking` "
        "(it asks for elevation)"
    )


def test_a_policy_block_rule_sends_the_user_to_the_administrator() -> None:
    warning = warning_for(fixture("windows/netsh-rules-policy-block.txt"))
    assert warning is not None
    assert warning.startswith(
        "the firewall rule 'Block inbound from virtual switches', set by policy, blocks TCP 41113"
    )
    assert "ask your administrator" in warning


def test_block_all_incoming_is_said_with_the_setting_to_change() -> None:
    warning = warning_for(rule_block(), fixture("windows/netsh-monitor-firewall-block-all.txt"))
    assert warning is not None
    assert warning.startswith("the firewall blocks all incoming connections on Public networks")
    assert "netsh advfirewall set publicprofile firewallpolicy blockinbound,allowoutbound" in (
        warning
    )


def test_no_warning_when_the_firewall_is_off_for_public() -> None:
    assert warning_for(None, fixture("windows/netsh-monitor-firewall-public-off.txt")) is None


def test_a_slow_netsh_is_one_line_not_silence() -> None:
    warning = firewall_warning(SPEC, EXE, NetshReading(None, None, rules_timed_out_after=60.0))
    assert warning is not None
    assert warning.startswith(
        "could not check the firewall: netsh gave no answer within 60 s; "
        "if WSL2 cannot connect, run `tailscale-wsl2.exe firewall add"
    )


@pytest.mark.parametrize("output", [None, "Règle: pas en anglais\n"])
def test_no_warning_on_a_guess(output: str | None) -> None:
    assert warning_for(output) is None


def test_the_running_image_is_the_file_this_process_runs_as() -> None:
    assert running_image() == sys.executable  # on Linux
    # On Windows, in pipx's venv: the base interpreter behind the venv's redirector.
    base = "C:\\Users\\alice\\AppData\\Local\\Programs\\Python\\Python312\\python.exe"
    assert running_image(lambda: base) == base


# --- firewall add / remove / show -------------------------------------------------------------

EXISTS = CommandResult(0, rule_block())
MISSING = CommandResult(1, "No rules match the specified criteria.")


@dataclass
class FakeRun:
    """netsh by verb (add, set, delete, show): its answer; records the command lines."""

    answers: dict[str, CommandResult | None]
    ran: list[list[str]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str]) -> CommandResult | None:
        self.ran.append(list(argv))
        return self.answers.get(argv[3], CommandResult(0, "Ok."))


ALLOWED = NetshReading(rule_block(Program=EXE), PROFILES)
PROMPT_BLOCKS = NetshReading(fixture("windows/netsh-rules-prompt-blocks.txt"), PROFILES)
ENVIRON = {"SystemRoot": r"C:\WINDOWS"}
# The copy the prompt saw first, in Downloads: a copy of this tool, so its rules are ours too.
PROMPTED_EXE = r"C:\Users\me\Downloads\tailscale-wsl2.exe"


def system(
    run: FakeRun,
    *,
    admin: bool = False,
    uac: int | None = 0,
    readings: Sequence[NetshReading] = (ALLOWED,),
) -> tuple[FirewallSystem, list[list[str]]]:
    """The seams; `readings`: what each read of the firewall finds, in turn (the last again)."""
    elevated: list[list[str]] = []
    reads = list(readings)

    def run_elevated(argv: Sequence[str]) -> int | None:
        elevated.append(list(argv))
        return uac

    def read() -> NetshReading:
        return reads.pop(0) if len(reads) > 1 else reads[0]

    fake = FirewallSystem(
        run=run,
        is_admin=lambda: admin,
        run_elevated=run_elevated,
        read=read,
        image=EXE,
        environ=ENVIRON,
    )
    return fake, elevated


@dataclass
class Asked:
    answer: bool
    rules: list[list[str]] = field(default_factory=list)

    def __call__(self, rules: Sequence[FirewallRule]) -> bool:
        self.rules.append([rule.name for rule in rules])
        return self.answer


def never_asked(rules: Sequence[FirewallRule]) -> bool:
    raise AssertionError("nothing to remove: the user must not be asked")


def test_add_asks_uac_to_add_when_there_is_no_rule() -> None:
    fake, elevated = system(FakeRun({"show": MISSING}))
    assert add_or_update_rule(SPEC, fake, never_asked) == (
        f"added firewall rule 'tailscale-wsl2': TCP 41113 from 172.27.64.0/20 to {EXE}"
    )
    assert elevated == [add_rule_argv(SPEC)]


def test_add_again_updates_the_rule_in_place() -> None:
    fake, elevated = system(FakeRun({"show": EXISTS}))
    assert add_or_update_rule(SPEC, fake, never_asked).startswith(
        "updated firewall rule 'tailscale-wsl2'"
    )
    assert elevated == [update_rule_argv(SPEC)]


def test_elevated_already_runs_netsh_directly() -> None:
    run = FakeRun({"show": MISSING})
    fake, elevated = system(run, admin=True)
    add_or_update_rule(SPEC, fake, never_asked)
    assert run.ran == [show_rule_argv(), add_rule_argv(SPEC)]
    assert elevated == []


def test_declined_elevation_gives_the_command_for_an_elevated_shell() -> None:
    fake, _ = system(FakeRun({"show": MISSING}), uac=None)
    with pytest.raises(ActionableError) as caught:
        add_or_update_rule(SPEC, fake, never_asked)
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
        add_or_update_rule(SPEC, fake, never_asked)
    fake, _ = system(FakeRun({"show": MISSING}), uac=5)
    with pytest.raises(ActionableError, match=r"^netsh failed with exit status 5; in an elevated"):
        add_or_update_rule(SPEC, fake, never_asked)


# --- firewall add, after adding: is WSL2 let in? ----------------------------------------------


def test_the_prompts_block_rules_are_removed_with_consent() -> None:
    asked = Asked(True)
    fake, elevated = system(FakeRun({"show": EXISTS}), readings=[PROMPT_BLOCKS, ALLOWED])
    assert add_or_update_rule(SPEC, fake, asked).splitlines() == [
        f"updated firewall rule 'tailscale-wsl2': TCP 41113 from 172.27.64.0/20 to {EXE}",
        "removed the Block rules 'tailscale-wsl2.exe' that Windows' firewall prompt made for "
        f"'{PROMPTED_EXE}'",
    ]
    assert asked.rules == [["tailscale-wsl2.exe"]]
    assert elevated == [update_rule_argv(SPEC), remove_blocking_argv([PROMPTED_EXE], ENVIRON)]


def test_declining_removes_nothing_and_says_how_to_later() -> None:
    fake, elevated = system(FakeRun({"show": EXISTS}), readings=[PROMPT_BLOCKS])
    with pytest.raises(ActionableError) as caught:
        add_or_update_rule(SPEC, fake, Asked(False))
    assert caught.value.what.startswith(
        f"updated firewall rule 'tailscale-wsl2': TCP 41113 from 172.27.64.0/20 to {EXE}; "
        "the rule is in place, but the Block rules 'tailscale-wsl2.exe' that Windows' firewall "
        "prompt made for 'tailscale-wsl2.exe' keep WSL2 out"
    )
    assert caught.value.fix == (
        "run `tailscale-wsl2.exe firewall add --subnet 172.27.64.0/20 --remove-blocking` "
        "(it asks for elevation)"
    )
    assert elevated == [update_rule_argv(SPEC)]  # nothing removed


def test_what_still_blocks_after_adding_is_an_error_not_added() -> None:
    policy = NetshReading(fixture("windows/netsh-rules-policy-block.txt"), PROFILES)
    fake, _ = system(FakeRun({"show": MISSING}), readings=[policy])
    with pytest.raises(ActionableError) as caught:
        add_or_update_rule(SPEC, fake, never_asked)
    assert "the rule is in place, but the firewall rule 'Block inbound from virtual " in (
        caught.value.what
    )
    block_all = NetshReading(None, fixture("windows/netsh-monitor-firewall-block-all.txt"))
    fake, _ = system(FakeRun({"show": MISSING}), readings=[block_all])
    with pytest.raises(ActionableError, match="blocks all incoming connections"):
        add_or_update_rule(SPEC, fake, never_asked)


def test_a_slow_check_after_adding_is_said_but_not_failed() -> None:
    slow = NetshReading(None, PROFILES, rules_timed_out_after=60.0)
    fake, _ = system(FakeRun({"show": MISSING}), readings=[slow])
    assert add_or_update_rule(SPEC, fake, never_asked).splitlines()[1] == (
        "could not check the firewall: netsh gave no answer within 60 s"
    )


def test_the_removal_script_selects_inbound_block_rules_of_the_program_only() -> None:
    odd = r"C:\Users\O'Brien\tailscale-wsl2.exe"
    script = remove_blocking_script([EXE, odd, EXE])
    assert script == "; ".join(
        f"Get-NetFirewallApplicationFilter -Program '{program}' -PolicyStore PersistentStore "
        "| Get-NetFirewallRule "
        "| Where-Object { $_.Direction -eq 'Inbound' -and $_.Action -eq 'Block' } "
        "| Remove-NetFirewallRule"
        for program in [EXE, r"C:\Users\O''Brien\tailscale-wsl2.exe"]
    )
    argv = remove_blocking_argv([EXE], ENVIRON)
    assert argv[:4] == [
        r"C:\WINDOWS\System32\WindowsPowerShell\v1.0\powershell.exe",
        "-NoProfile",
        "-NonInteractive",
        "-EncodedCommand",
    ]
    decoded = base64.b64decode(argv[4]).decode("utf-16-le")
    assert decoded == "$ErrorActionPreference = 'Stop'; " + remove_blocking_script([EXE])


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
    "command",
    [["add"], ["add", "--subnet", "10.0.0.0/8", "--remove-blocking"], ["remove"], ["show"]],
)
def test_the_cli_says_it_is_for_windows(command: list[str]) -> None:
    result = CliRunner().invoke(app, ["firewall", *command])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "tailscale-wsl2: firewall commands are for Windows; "
        "run `tailscale-wsl2.exe firewall ...` in Windows (PowerShell or cmd)"
    ]
