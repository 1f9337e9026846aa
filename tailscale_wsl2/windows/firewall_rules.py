"""Whether Windows Defender Firewall lets the WSL2 half in, from `netsh` output.

WSL-to-host traffic is inbound on the host, and the vEthernet (WSL) adapter sits in the Public
profile, where inbound is blocked unless a rule allows it. So the question is: does an enabled
inbound Allow rule for the Public profile cover TCP, the Windows half's port, and the whole WSL
subnet? And does no enabled Block rule cover it too (Block wins over Allow in Windows Firewall)?
Rules scoped to another program or to a service do not apply to the Windows half.

`netsh advfirewall firewall show rule name=all dir=in verbose` prints one block per rule,
`Rule Name:` first, then `Label:   value` lines. netsh normalizes what it prints: a CIDR comes
back as `172.27.64.0/255.255.240.0`, lists are comma-separated, ranges use `-`. The labels are
localized on non-English Windows; output without any `Rule Name:` is reported as unreadable
rather than as "no rule".
"""

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import PureWindowsPath
from typing import Literal

from tailscale_wsl2.facts import PROGRAM

__all__ = [
    "Coverage",
    "FirewallRule",
    "firewall_coverage",
    "parse_firewall_rules",
    "rule_covers",
]


@dataclass(frozen=True)
class FirewallRule:
    """One rule, with the fields that decide whether it covers the Windows half."""

    name: str
    enabled: bool
    direction: str
    profiles: str
    protocol: str
    local_port: str
    remote_ip: str
    action: str
    program: str  # "" or "Any": every program
    service: str


def _rule(fields: dict[str, str]) -> FirewallRule:
    return FirewallRule(
        name=fields["Rule Name"],
        enabled=fields.get("Enabled", "").lower() == "yes",
        direction=fields.get("Direction", ""),
        profiles=fields.get("Profiles", ""),
        protocol=fields.get("Protocol", ""),
        local_port=fields.get("LocalPort", ""),
        remote_ip=fields.get("RemoteIP", ""),
        action=fields.get("Action", ""),
        program=fields.get("Program", ""),
        service=fields.get("Service", ""),
    )


def parse_firewall_rules(text: str) -> list[FirewallRule]:
    """Every rule in `netsh advfirewall firewall show rule ... verbose` output."""
    blocks: list[dict[str, str]] = []
    for line in text.splitlines():
        # Labels hold no colon; values may (`Program: C:\...`), so the first colon splits.
        label, colon, value = line.partition(":")
        if not colon:
            continue  # blank lines, the dashes under each name, "Ok."
        if label.strip() == "Rule Name":
            blocks.append({})
        if blocks:
            blocks[-1].setdefault(label.strip(), value.strip())
    return [_rule(fields) for fields in blocks]


def _items(spec: str) -> list[str]:
    return [item.strip() for item in spec.split(",") if item.strip()]


def _covers_port(spec: str, port: int) -> bool:
    for item in _items(spec):
        if item.lower() == "any":
            return True
        low, dash, high = item.partition("-")
        high = high if dash else low
        # Keywords (RPC, IPHTTPS, Teredo, ...) name ports other than ours.
        if low.isdigit() and high.isdigit() and int(low) <= port <= int(high):
            return True
    return False


def _covers_network(item: str, subnet: IPv4Network) -> bool:
    lowered = item.lower()
    # LocalSubnet: any subnet the host has an address in, the WSL subnet included.
    if lowered in ("any", "localsubnet"):
        return True
    first, dash, last = item.partition("-")
    try:
        if dash:
            return IPv4Address(first) <= subnet[0] and subnet[-1] <= IPv4Address(last)
        return subnet.subnet_of(IPv4Network(item, strict=False))
    except ValueError:
        return False  # IPv6 entries and keywords such as Internet or DefaultGateway


def _scoped_to_this_tool_or_none(rule: FirewallRule) -> bool:
    # A rule for another program (say the python.exe rule Windows' "allow access?" prompt adds)
    # or for a service does not apply to the Windows half's connections.
    program = PureWindowsPath(rule.program).name.lower() if rule.program.lower() != "any" else ""
    service = "" if rule.service.lower() == "any" else rule.service
    return not service and (not program or program.startswith(PROGRAM))


def _applies_to_wsl_traffic(rule: FirewallRule) -> bool:
    profiles = rule.profiles.lower()
    return (
        rule.enabled
        and _scoped_to_this_tool_or_none(rule)
        and rule.direction.lower() == "in"
        and ("public" in profiles or profiles == "any")
        and rule.protocol.lower() in ("tcp", "any")
    )


def rule_covers(rule: FirewallRule, port: int, subnet: IPv4Network) -> bool:
    """Whether `rule` applies to TCP from every address of `subnet` to `port`."""
    return (
        _applies_to_wsl_traffic(rule)
        and _covers_port(rule.local_port, port)
        and any(_covers_network(item, subnet) for item in _items(rule.remote_ip))
    )


@dataclass(frozen=True)
class Coverage:
    """What the firewall does to TCP `port` from the WSL subnet, and the rule that decides it.

    `allowed` and `blocked` name a rule; `missing` means no rule lets it in (inbound is blocked
    by default on the Public profile); `unreadable` means netsh's answer could not be read (not
    run, or printed in a language whose labels the parser does not know).
    """

    verdict: Literal["allowed", "blocked", "missing", "unreadable"]
    rule: str | None = None


def firewall_coverage(netsh_output: str | None, port: int, subnet: IPv4Network) -> Coverage:
    """The one verdict `up`'s warning and doctor share, from `netsh ... show rule` output."""
    rules = parse_firewall_rules(netsh_output) if netsh_output else []
    if not rules:
        return Coverage("unreadable")
    covering = [rule for rule in rules if rule_covers(rule, port, subnet)]
    # Block wins over Allow in Windows Defender Firewall.
    for action in ("block", "allow"):
        deciding = [rule.name for rule in covering if rule.action.lower() == action]
        if deciding:
            return Coverage("blocked" if action == "block" else "allowed", deciding[0])
    return Coverage("missing")
