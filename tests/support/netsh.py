"""Firewall rules as `netsh advfirewall firewall show rule ... verbose` prints them (English)."""


def rule_block(**fields: str) -> str:
    defaults = {
        "Rule Name": "tailscale-wsl2",
        "Enabled": "Yes",
        "Direction": "In",
        "Profiles": "Domain,Private,Public",
        "LocalIP": "Any",
        "RemoteIP": "172.27.64.0/255.255.240.0",
        "Protocol": "TCP",
        "LocalPort": "41113",
        "RemotePort": "Any",
        "Edge traversal": "No",
        "Action": "Allow",
    }
    lines = [f"{label + ':':<38}{value}" for label, value in {**defaults, **fields}.items()]
    lines.insert(1, "-" * 70)
    return "\r\n".join(lines) + "\r\n\r\n"
