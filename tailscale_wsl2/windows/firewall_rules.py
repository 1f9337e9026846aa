"""Whether Windows Defender Firewall lets the WSL2 half in, from `netsh` output.

WSL-to-host traffic is inbound on the host, and the vEthernet (WSL) adapter sits in the Public
profile. So the question is asked of the Public profile, in the order Windows decides it:

1. Is the firewall off for Public? Then nothing is filtered.
2. Does Public block all incoming connections ("Block all incoming connections", policy
   `BlockInboundAlways`)? Then no rule helps.
3. Does an enabled inbound Block rule cover TCP, the Windows half's port and the whole WSL
   subnet, for this program? Block wins over Allow. Windows' own first-listen prompt, dismissed
   or answered for Private networks only, leaves such rules scoped to the program (for Public),
   and they beat the Allow rule `firewall add` makes.
4. Does an enabled inbound Allow rule cover it? Else inbound is blocked by default.

A rule scoped to another program (say the python.exe rule the prompt made for another Python
program) or to a service does not apply to the Windows half; a rule for this very executable,
or for a copy of this tool, does. Policy (Group Policy, or an MDM) can set rules, which a user
cannot remove, and can make the firewall ignore local rules (`LocalFirewallRules Disable`).

Two netsh commands are read:
- `netsh advfirewall firewall show rule name=all dir=in verbose`: one block per rule,
  `Rule Name:` first, then `Label:   value` lines, with `Rule source:` saying whether it is a
  local rule or came from policy. netsh normalizes what it prints: a CIDR comes back as
  `172.27.64.0/255.255.240.0`, lists are comma-separated, ranges use `-`.
- `netsh advfirewall monitor show firewall`: each profile's settings as Windows applies them,
  local and policy merged (the plain `show allprofiles` reads the local store only, so a
  policy's "firewall off" or "block all" would not show): a `Public Profile Settings:` header,
  then `Label   value` lines (`State ON`, `Firewall Policy BlockInbound,AllowOutbound`,
  `LocalFirewallRules Enable`).
Labels are localized on non-English Windows: rules output without any `Rule Name:` is reported
as unreadable rather than as "no rule"; an unreadable profile is simply not used.
"""

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import PureWindowsPath
from typing import Literal

from tailscale_wsl2.facts import PROGRAM

__all__ = [
    "Coverage",
    "FirewallRule",
    "NetshReading",
    "ProfileSettings",
    "firewall_coverage",
    "parse_firewall_rules",
    "parse_public_profile",
    "rule_covers",
    "scoped_to_this_program",
    "windowless_twin",
]

LOCAL_SETTING = "local setting"


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
    source: str = ""  # "Local Setting", or the policy that set it ("": netsh printed none)

    @property
    def from_policy(self) -> bool:
        return bool(self.source) and self.source.lower() != LOCAL_SETTING


def _rule(fields: dict[str, str]) -> FirewallRule:
    protocol = fields.get("Protocol", "")
    # netsh prints no ports for a protocol without them (Any, ICMP): every port then. A TCP or
    # UDP rule always has its ports printed; one without them is not taken to cover ours.
    no_ports = "" if protocol.lower() in ("tcp", "udp") else "Any"
    return FirewallRule(
        name=fields["Rule Name"],
        enabled=fields.get("Enabled", "").lower() == "yes",
        direction=fields.get("Direction", ""),
        profiles=fields.get("Profiles", ""),
        protocol=protocol,
        local_port=fields.get("LocalPort", no_ports),
        remote_ip=fields.get("RemoteIP", ""),
        action=fields.get("Action", ""),
        program=fields.get("Program", ""),
        service=fields.get("Service", ""),
        source=fields.get("Rule source", ""),
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


@dataclass(frozen=True)
class ProfileSettings:
    """The Public profile's settings that decide before any rule does."""

    enabled: bool  # State ON
    inbound: str  # the inbound half of Firewall Policy, lowercase: blockinbound, allowinbound,
    # blockinboundalways ("Block all incoming connections")
    local_rules: bool  # False when policy makes the firewall ignore local rules


def _profile_blocks(text: str) -> dict[str, dict[str, str]]:
    """`Xyz Profile Settings:` sections, by their first word lowercased, as label -> value."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        header = re.match(r"^(\w+) Profile Settings\b[^:]*:\s*$", line.strip())
        if header:
            current = sections.setdefault(header.group(1).lower(), {})
            continue
        # `Label                                 value`: two or more spaces split them.
        pair = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        if current is not None and len(pair) == 2:
            current.setdefault(pair[0], pair[1].strip())
    return sections


def parse_public_profile(text: str) -> ProfileSettings | None:
    """The Public profile in `netsh advfirewall monitor show firewall` (or `show allprofiles`)
    output; None when there is none in a language this reads."""
    public = _profile_blocks(text).get("public")
    if not public or "State" not in public:
        return None
    policy = public.get("Firewall Policy", "")
    return ProfileSettings(
        enabled=public["State"].upper() == "ON",
        inbound=policy.split(",")[0].strip().lower(),
        # "Enable", or "N/A (GPO-store only)" in the local store; only "Disable" ignores them.
        local_rules=public.get("LocalFirewallRules", "").lower() != "disable",
    )


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


def _windows_path(path: str) -> str:
    return str(PureWindowsPath(path)).lower()


def windowless_twin(image: str) -> str:
    """The windowless interpreter beside a python.exe (its pythonw.exe), else `image` itself."""
    path = PureWindowsPath(image)
    return str(path.with_name("pythonw.exe")) if path.name.lower() == "python.exe" else image


def scoped_to_this_program(rule: FirewallRule, image: str) -> bool:
    """Whether `rule` names this executable (`image`), its windowless twin, or a copy of this
    tool, as its program. The twin: installed with pipx or uv, the logon task runs the Windows
    half as pythonw.exe, while doctor and `up` in a terminal run as python.exe beside it; the
    rule install made for the one is right for the other, and both must say so."""
    if rule.program.lower() in ("", "any"):
        return False
    if _windows_path(rule.program) in (_windows_path(image), _windows_path(windowless_twin(image))):
        return True
    return PureWindowsPath(rule.program).name.lower().startswith(PROGRAM)


def _applies_to_this_program(rule: FirewallRule, image: str) -> bool:
    # A rule for a service, or for another program, does not apply to the Windows half.
    service = "" if rule.service.lower() == "any" else rule.service
    any_program = rule.program.lower() in ("", "any")
    return not service and (any_program or scoped_to_this_program(rule, image))


def _applies_to_wsl_traffic(rule: FirewallRule, image: str) -> bool:
    profiles = rule.profiles.lower()
    return (
        rule.enabled
        and _applies_to_this_program(rule, image)
        and rule.direction.lower() == "in"
        and ("public" in profiles or profiles == "any")
        and rule.protocol.lower() in ("tcp", "any")
    )


def rule_covers(rule: FirewallRule, port: int, subnet: IPv4Network, image: str) -> bool:
    """Whether `rule` applies to TCP from every address of `subnet` to `port`, for the program
    `image` (the running executable's path)."""
    return (
        _applies_to_wsl_traffic(rule, image)
        and _covers_port(rule.local_port, port)
        and any(_covers_network(item, subnet) for item in _items(rule.remote_ip))
    )


@dataclass(frozen=True)
class NetshReading:
    """What the two netsh commands printed (None: not run, or failed), and how long the rule
    listing ran without an answer when it timed out."""

    rules: str | None
    profiles: str | None = None
    rules_timed_out_after: float | None = None


Verdict = Literal[
    "allowed",
    "off",
    "blocked",
    "block-all",
    "local-rules-ignored",
    "missing",
    "unreadable",
    "timed-out",
]


@dataclass(frozen=True)
class Coverage:
    """What the firewall does to TCP `port` from the WSL subnet, and what decides it.

    - `allowed`: `rule` lets it in; `off`: the firewall is off for Public;
    - `blocked`: the Block rules in `blocking` (the first one is `rule`) keep it out;
    - `block-all`: Public blocks all incoming connections; `local-rules-ignored`: policy makes
      the firewall ignore local rules, the local Allow `rule` among them;
    - `missing`: no rule lets it in (inbound is blocked by default on Public);
    - `unreadable`: the rules could not be read (netsh not run, or printed in a language whose
      labels this does not know); `timed-out`: netsh gave no answer in `seconds`.
    """

    verdict: Verdict
    rule: str | None = None
    blocking: tuple[FirewallRule, ...] = ()
    seconds: float | None = None

    def removable(self, image: str) -> tuple[FirewallRule, ...]:
        """The blocking rules a user may remove: local ones scoped to this program (the
        first-listen prompt's); empty unless removing them would let the traffic in."""
        mine = tuple(
            rule
            for rule in self.blocking
            if not rule.from_policy and scoped_to_this_program(rule, image)
        )
        return mine if len(mine) == len(self.blocking) else ()


def _profile_verdict(profile: ProfileSettings | None) -> Coverage | None:
    if profile is None:
        return None
    if not profile.enabled:
        return Coverage("off")
    if profile.inbound == "blockinboundalways":
        return Coverage("block-all")
    return None


def _rules_verdict(
    rules: list[FirewallRule], local_rules_apply: bool, port: int, subnet: IPv4Network, image: str
) -> Coverage:
    covering = [rule for rule in rules if rule_covers(rule, port, subnet, image)]
    ignored = [] if local_rules_apply else [rule for rule in covering if not rule.from_policy]
    covering = [rule for rule in covering if rule not in ignored]
    blocking = tuple(rule for rule in covering if rule.action.lower() == "block")
    if blocking:
        return Coverage("blocked", blocking[0].name, blocking)
    allowing = [rule.name for rule in covering if rule.action.lower() == "allow"]
    if allowing:
        return Coverage("allowed", allowing[0])
    ignored_allow = [rule.name for rule in ignored if rule.action.lower() == "allow"]
    if ignored_allow:
        return Coverage("local-rules-ignored", ignored_allow[0])
    return Coverage("missing")


def firewall_coverage(
    reading: NetshReading, port: int, subnet: IPv4Network, image: str
) -> Coverage:
    """The one verdict `up`'s warning, `firewall add` and doctor share."""
    profile = parse_public_profile(reading.profiles) if reading.profiles else None
    decided = _profile_verdict(profile)
    if decided:
        return decided
    if reading.rules_timed_out_after is not None:
        return Coverage("timed-out", seconds=reading.rules_timed_out_after)
    rules = parse_firewall_rules(reading.rules) if reading.rules else []
    if not rules:
        return Coverage("unreadable")
    local_rules_apply = profile is None or profile.local_rules
    return _rules_verdict(rules, local_rules_apply, port, subnet, image)
