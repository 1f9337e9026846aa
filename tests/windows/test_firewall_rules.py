"""The firewall verdict, on netsh samples: the profile decides first (off, block all, local rules
ignored), then Block rules (the first-listen prompt's, a policy's, anyone's), then Allow rules;
a timed-out listing and an unreadable one are verdicts of their own."""

from ipaddress import IPv4Network

import pytest

from tailscale_wsl2.windows.firewall_rules import (
    Coverage,
    NetshReading,
    ProfileSettings,
    firewall_coverage,
    parse_firewall_rules,
    parse_public_profile,
)
from tests.support.doctor_fakes import fixture
from tests.support.netsh import rule_block

SUBNET = IPv4Network("172.27.64.0/20")
EXE = r"C:\Users\me\Downloads\tailscale-wsl2.exe"
PYTHON = r"C:\users\me\appdata\local\programs\python\python312\python.exe"
PROFILES = fixture("windows/netsh-monitor-firewall.txt")


def verdict(rules: str | None, profiles: str | None = PROFILES, image: str = EXE) -> Coverage:
    return firewall_coverage(NetshReading(rules, profiles), 41113, SUBNET, image)


def test_the_public_profile_is_read() -> None:
    assert parse_public_profile(PROFILES) == ProfileSettings(
        enabled=True, inbound="blockinbound", local_rules=True
    )
    assert parse_public_profile(fixture("windows/netsh-monitor-firewall-block-all.txt")) == (
        ProfileSettings(enabled=True, inbound="blockinboundalways", local_rules=True)
    )


def test_the_local_store_says_nothing_about_local_rules() -> None:
    # `show allprofiles` prints "N/A (GPO-store only)" there: local rules count.
    local_store = PROFILES.replace(
        "LocalFirewallRules                    Enable",
        "LocalFirewallRules                    N/A (GPO-store only)",
    )
    profile = parse_public_profile(local_store)
    assert profile is not None
    assert profile.local_rules


@pytest.mark.parametrize("text", ["", "Öffentliches Profil Einstellungen:\r\nStatus   EIN\r\n"])
def test_a_profile_in_another_language_is_not_guessed(text: str) -> None:
    assert parse_public_profile(text) is None


def test_the_rule_source_is_read() -> None:
    rules = parse_firewall_rules(fixture("windows/netsh-rules-policy-block.txt"))
    assert [(rule.name, rule.from_policy) for rule in rules] == [
        ("Block inbound from virtual switches", True),
        ("tailscale-wsl2", False),
    ]


def test_an_allow_rule_lets_it_in() -> None:
    assert verdict(rule_block()) == Coverage("allowed", "tailscale-wsl2")


def test_no_rule_is_missing() -> None:
    assert verdict(fixture("windows/netsh-rules.txt")) == Coverage("missing")


def test_a_public_profile_with_the_firewall_off_lets_everything_in() -> None:
    off = fixture("windows/netsh-monitor-firewall-public-off.txt")
    # Even with no rule, and even a Block rule, nothing is filtered.
    block = rule_block(**{"Rule Name": "Lockdown", "Action": "Block"})
    assert verdict(fixture("windows/netsh-rules.txt") + block, off) == Coverage("off")


def test_block_all_incoming_beats_every_allow_rule() -> None:
    block_all = fixture("windows/netsh-monitor-firewall-block-all.txt")
    assert verdict(rule_block(), block_all) == Coverage("block-all")


def test_the_prompts_block_rules_beat_the_allow_rule_and_may_be_removed() -> None:
    coverage = verdict(fixture("windows/netsh-rules-prompt-blocks.txt"))
    assert coverage.verdict == "blocked"
    assert coverage.rule == "tailscale-wsl2.exe"
    # The TCP one for Public: the UDP one and those for Private do not cover WSL2's TCP.
    assert [(r.name, r.protocol, r.profiles) for r in coverage.blocking] == [
        ("tailscale-wsl2.exe", "TCP", "Public")
    ]
    assert coverage.removable(EXE) == coverage.blocking


def test_a_block_rule_for_this_python_applies_when_run_from_source() -> None:
    rules = rule_block() + rule_block(
        **{"Rule Name": "python.exe", "RemoteIP": "Any", "Action": "Block", "Program": PYTHON}
    )
    coverage = verdict(rules, image=PYTHON)
    assert coverage.verdict == "blocked"
    assert [rule.name for rule in coverage.removable(PYTHON)] == ["python.exe"]
    # ...and not to the frozen program.
    assert verdict(rules, image=EXE) == Coverage("allowed", "tailscale-wsl2")


def test_program_paths_compare_as_windows_paths() -> None:
    upper = EXE.upper().replace("\\", "/")
    rules = rule_block(**{"Program": upper})
    assert verdict(rules) == Coverage("allowed", "tailscale-wsl2")


def test_a_policy_block_rule_is_never_removable() -> None:
    coverage = verdict(fixture("windows/netsh-rules-policy-block.txt"))
    assert coverage.verdict == "blocked"
    assert coverage.rule == "Block inbound from virtual switches"
    assert coverage.removable(EXE) == ()


def test_removal_is_offered_only_when_it_would_let_wsl2_in() -> None:
    # A Block rule for every program stays: removing the prompt's alone would not help.
    rules = fixture("windows/netsh-rules-prompt-blocks.txt") + rule_block(
        **{"Rule Name": "Lockdown", "Action": "Block"}
    )
    coverage = verdict(rules)
    assert [rule.name for rule in coverage.blocking] == ["tailscale-wsl2.exe", "Lockdown"]
    assert coverage.removable(EXE) == ()


def test_policy_that_ignores_local_rules_ignores_the_local_allow_rule() -> None:
    ignored = fixture("windows/netsh-monitor-firewall-local-rules-ignored.txt")
    assert verdict(rule_block(), ignored) == Coverage("local-rules-ignored", "tailscale-wsl2")
    # A policy's own Allow rule still counts.
    from_policy = rule_block(**{"Rule Name": "Corp WSL", "Rule source": "Group Policy"})
    assert verdict(from_policy, ignored) == Coverage("allowed", "Corp WSL")


def test_a_listing_that_timed_out_is_said_to_have() -> None:
    reading = NetshReading(None, PROFILES, rules_timed_out_after=60.0)
    assert firewall_coverage(reading, 41113, SUBNET, EXE) == Coverage("timed-out", seconds=60.0)
    # What the profile alone decides is still known.
    off = NetshReading(None, fixture("windows/netsh-monitor-firewall-public-off.txt"), 60.0)
    assert firewall_coverage(off, 41113, SUBNET, EXE) == Coverage("off")


@pytest.mark.parametrize("rules", [None, "Keine Regeln entsprechen den angegebenen Kriterien.\r\n"])
def test_rules_that_cannot_be_read_are_unreadable(rules: str | None) -> None:
    assert verdict(rules) == Coverage("unreadable")
    # An unreadable profile is simply not used.
    assert verdict(rule_block(), profiles=None) == Coverage("allowed", "tailscale-wsl2")
