"""netsh rule blocks as Windows prints them, the edge cases of coverage, and the one verdict.

tests/windows/test_tools.py reads a real listing and the common rule shapes; these are the
inputs it does not give: blocks missing labels, values in other spellings, ranges and networks
that cover the WSL subnet only in part, and `firewall_coverage`'s choice among rules.
"""

from ipaddress import IPv4Network

import pytest

from tailscale_wsl2.windows.firewall_rules import (
    Coverage,
    firewall_coverage,
    parse_firewall_rules,
    rule_covers,
)
from tests.support.netsh import rule_block

WSL_SUBNET = IPv4Network("172.27.64.0/20")
PORT = 41113


def without(block: str, *labels: str) -> str:
    """`block` with the lines of `labels` left out, as some rules print (no LocalPort for ICMP)."""
    kept = [line for line in block.splitlines() if line.partition(":")[0].strip() not in labels]
    return "\r\n".join(kept) + "\r\n"


def covers(block: str) -> bool:
    [rule] = parse_firewall_rules(block)
    return rule_covers(rule, PORT, WSL_SUBNET)


@pytest.mark.parametrize("missing", ["Enabled", "LocalPort", "RemoteIP", "Direction", "Protocol"])
def test_a_rule_missing_a_deciding_label_is_read_and_covers_nothing(missing: str) -> None:
    block = without(rule_block(), missing)
    [rule] = parse_firewall_rules(block)
    assert rule.name == "tailscale-wsl2"
    assert not rule_covers(rule, PORT, WSL_SUBNET)


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
        assert firewall_coverage(output, PORT, WSL_SUBNET) == Coverage("unreadable")
    # A German listing: labels the parser does not know, so no rule at all.
    german = rule_block().replace("Rule Name:", "Regelname:")
    assert firewall_coverage(german, PORT, WSL_SUBNET) == Coverage("unreadable")


def test_rules_that_cover_nothing_leave_it_missing() -> None:
    text = rule_block(LocalPort="80") + rule_block(Enabled="No")
    assert firewall_coverage(text, PORT, WSL_SUBNET) == Coverage("missing")


def test_the_first_covering_allow_rule_is_named() -> None:
    text = (
        rule_block(**{"Rule Name": "web", "LocalPort": "80"})
        + rule_block(**{"Rule Name": "first"})
        + rule_block(**{"Rule Name": "second"})
    )
    assert firewall_coverage(text, PORT, WSL_SUBNET) == Coverage("allowed", "first")


@pytest.mark.parametrize("block_first", [True, False])
def test_a_covering_block_rule_wins_over_any_allow_rule(block_first: bool) -> None:
    allow = rule_block(**{"Rule Name": "let it in"})
    block = rule_block(**{"Rule Name": "keep it out", "Action": "BLOCK"})
    other_block = rule_block(**{"Rule Name": "later block", "Action": "Block"})
    text = block + allow + other_block if block_first else allow + block + other_block
    assert firewall_coverage(text, PORT, WSL_SUBNET) == Coverage("blocked", "keep it out")


def test_a_block_rule_that_does_not_cover_leaves_the_allow_rule_deciding() -> None:
    text = rule_block(**{"Rule Name": "elsewhere", "Action": "Block", "LocalPort": "80"})
    text += rule_block(**{"Rule Name": "let it in", "Action": "allow"})
    assert firewall_coverage(text, PORT, WSL_SUBNET) == Coverage("allowed", "let it in")


def test_a_covering_rule_of_another_action_decides_nothing() -> None:
    text = rule_block(Action="Bypass")
    assert firewall_coverage(text, PORT, WSL_SUBNET) == Coverage("missing")
