"""The firewall verdict, on netsh samples: the profile decides first (off, block all, local rules
ignored), then Block rules (the first-listen prompt's, a policy's, anyone's), then Allow rules;
a timed-out listing and an unreadable one are verdicts of their own.

Then the edges tests/windows/test_tools.py's real listing and common rule shapes do not give:
blocks missing labels, values in other spellings, ranges and networks that cover the WSL subnet
only in part, and `firewall_coverage`'s choice among rules.
"""

from ipaddress import IPv4Network

import pytest

from tailscale_wsl2.windows.firewall_rules import (
    Coverage,
    NetshReading,
    ProfileSettings,
    firewall_coverage,
    parse_firewall_rules,
    parse_public_profile,
    rule_covers,
    windowless_twin,
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


# --- the edges of reading and covering ---------------------------------------------------------

WSL_SUBNET = SUBNET
PORT = 41113


def without(block: str, *labels: str) -> str:
    """`block` with the lines of `labels` left out, as some rules print (no LocalPort for ICMP)."""
    kept = [line for line in block.splitlines() if line.partition(":")[0].strip() not in labels]
    return "\r\n".join(kept) + "\r\n"


def covers(block: str) -> bool:
    [rule] = parse_firewall_rules(block)
    return rule_covers(rule, PORT, WSL_SUBNET, EXE)


@pytest.mark.parametrize("missing", ["Enabled", "LocalPort", "RemoteIP", "Direction", "Protocol"])
def test_a_rule_missing_a_deciding_label_is_read_and_covers_nothing(missing: str) -> None:
    block = without(rule_block(), missing)
    [rule] = parse_firewall_rules(block)
    assert rule.name == "tailscale-wsl2"
    assert not rule_covers(rule, PORT, WSL_SUBNET, EXE)


def test_a_rule_missing_labels_that_do_not_decide_still_covers() -> None:
    assert covers(without(rule_block(), "Description", "LocalIP", "RemotePort", "Edge traversal"))


def test_every_field_is_read_from_its_own_label() -> None:
    block = rule_block(
        **{
            "Rule Name": "  spaced name  ",
            "Enabled": "Yes",
            "Direction": "In",
            "Profiles": "Public",
            "Protocol": "TCP",
            "LocalPort": "41113",
            "RemoteIP": "LocalSubnet",
            "Action": "Allow",
            "Program": r"C:\Tools\tailscale-wsl2.exe",
            "Service": "Any",
        }
    )
    [rule] = parse_firewall_rules(block)
    assert rule.name == "spaced name"
    assert rule.enabled is True
    assert (rule.direction, rule.profiles, rule.protocol) == ("In", "Public", "TCP")
    assert (rule.local_port, rule.remote_ip, rule.action) == ("41113", "LocalSubnet", "Allow")
    # Only the first colon splits: a program path keeps its drive letter.
    assert (rule.program, rule.service) == (r"C:\Tools\tailscale-wsl2.exe", "Any")


def test_a_label_given_twice_keeps_its_first_value() -> None:
    doubled = rule_block(LocalPort="80").replace("LocalPort:", "LocalPort: 41113\r\nLocalPort:", 1)
    [rule] = parse_firewall_rules(doubled)
    assert rule.local_port == "41113"


def test_lines_before_the_first_rule_and_between_rules_belong_to_none() -> None:
    text = "Stray: value\r\n\r\n" + rule_block() + "Ok.\r\n\r\n" + rule_block(Action="Block")
    rules = parse_firewall_rules(text)
    assert [rule.action for rule in rules] == ["Allow", "Block"]
    assert "Stray" not in rules[0].name


def test_enabled_is_read_in_any_case() -> None:
    assert covers(rule_block(Enabled="YES"))
    assert not covers(rule_block(Enabled="Yesterday"))


@pytest.mark.parametrize(
    "fields",
    [
        {"Profiles": "Any"},
        {"Profiles": "PUBLIC"},
        {"Service": "Any"},
        {"Service": "ANY"},
        {"Program": "ANY"},
        {"Program": r"C:\Program Files\tailscale-wsl2\Tailscale-WSL2.EXE"},
        {"Direction": "IN"},
        {"Protocol": "tcp"},
        {"Protocol": "ANY"},
        {"LocalPort": "ANY"},
        {"LocalPort": "41113-41113"},
        {"LocalPort": "41113-41200"},
        {"LocalPort": "41000-41113"},
        {"LocalPort": " 80 , 41113 "},
        {"RemoteIP": "localsubnet"},
        {"RemoteIP": "ANY"},
        # Host bits set: Windows keeps the address as typed; the rule means its network.
        {"RemoteIP": "172.27.64.1/20"},
        {"RemoteIP": "172.27.64.1/255.255.240.0"},
        # A range exactly as wide as the subnet, and the subnet among other entries.
        {"RemoteIP": "172.27.64.0-172.27.79.255"},
        {"RemoteIP": "Internet,fe80::/64,172.27.64.0/20"},
    ],
)
def test_spellings_and_edges_that_cover(fields: dict[str, str]) -> None:
    assert covers(rule_block(**fields))


@pytest.mark.parametrize(
    "fields",
    [
        {"Profiles": "Domain"},
        {"Profiles": ""},
        {"Service": "Dnscache"},
        {"Program": r"C:\Windows\System32\svchost.exe"},
        {"Direction": "Inbound-ish"},
        {"Protocol": "ICMPv4"},
        {"LocalPort": "41114"},
        {"LocalPort": "41112"},
        {"LocalPort": "41114-41200"},
        {"LocalPort": "41000-41112"},
        {"LocalPort": ""},
        # Ranges covering only part of the WSL subnet, at either end.
        {"RemoteIP": "172.27.64.0-172.27.70.255"},
        {"RemoteIP": "172.27.65.0-172.27.79.255"},
        {"RemoteIP": "172.27.64.1-172.27.79.255"},
        {"RemoteIP": "172.27.64.0-172.27.79.254"},
        # A smaller network holding the subnet's first address only.
        {"RemoteIP": "172.27.64.1/21"},
        {"RemoteIP": "Internet,DefaultGateway"},
        {"RemoteIP": "not-an-address-172.27.64.0"},
        {"RemoteIP": ""},
    ],
)
def test_spellings_and_edges_that_do_not(fields: dict[str, str]) -> None:
    assert not covers(rule_block(**fields))


def test_no_output_or_output_without_rules_is_unreadable() -> None:
    for output in (None, "", "No rules match the specified criteria.\r\n"):
        assert verdict(output) == Coverage("unreadable")
    # A German listing: labels the parser does not know, so no rule at all.
    german = rule_block().replace("Rule Name:", "Regelname:")
    assert verdict(german) == Coverage("unreadable")


def test_rules_that_cover_nothing_leave_it_missing() -> None:
    text = rule_block(LocalPort="80") + rule_block(Enabled="No")
    assert verdict(text) == Coverage("missing")


def test_the_first_covering_allow_rule_is_named() -> None:
    text = (
        rule_block(**{"Rule Name": "web", "LocalPort": "80"})
        + rule_block(**{"Rule Name": "first"})
        + rule_block(**{"Rule Name": "second"})
    )
    assert verdict(text) == Coverage("allowed", "first")


@pytest.mark.parametrize("block_first", [True, False])
def test_a_covering_block_rule_wins_over_any_allow_rule(block_first: bool) -> None:
    allow = rule_block(**{"Rule Name": "let it in"})
    block = rule_block(**{"Rule Name": "keep it out", "Action": "BLOCK"})
    other_block = rule_block(**{"Rule Name": "later block", "Action": "Block"})
    text = block + allow + other_block if block_first else allow + block + other_block
    coverage = verdict(text)
    assert (coverage.verdict, coverage.rule) == ("blocked", "keep it out")


def test_a_block_rule_that_does_not_cover_leaves_the_allow_rule_deciding() -> None:
    text = rule_block(**{"Rule Name": "elsewhere", "Action": "Block", "LocalPort": "80"})
    text += rule_block(**{"Rule Name": "let it in", "Action": "allow"})
    assert verdict(text) == Coverage("allowed", "let it in")


def test_a_covering_rule_of_another_action_decides_nothing() -> None:
    text = rule_block(Action="Bypass")
    assert verdict(text) == Coverage("missing")


def test_the_rule_for_pipx_s_task_covers_doctor_and_up_in_a_terminal_alike() -> None:
    """Installed with pipx, the task runs as pythonw.exe and doctor as python.exe beside it:
    the rule install made for the first is right for both, so they agree."""
    pythonw = PYTHON.replace("python.exe", "pythonw.exe")
    rules = rule_block(Program=pythonw)
    assert verdict(rules, image=pythonw) == Coverage("allowed", "tailscale-wsl2")
    assert verdict(rules, image=PYTHON) == Coverage("allowed", "tailscale-wsl2")
    # Windows matches the exact program: a rule for python.exe does not let pythonw.exe in.
    assert verdict(rule_block(Program=PYTHON), image=pythonw).verdict == "missing"
    assert windowless_twin(PYTHON) == pythonw
    assert windowless_twin(EXE) == EXE
