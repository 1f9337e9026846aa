"""`tailscale-wsl2 doctor`: find the broken hop between `tailscale` in WSL2 and Tailscale on
Windows, and print its fix (in the manner of flutter doctor and brew doctor).

`model` holds the vocabulary (checks, verdicts, the runner, rendering); `wsl_checks` and
`windows_checks` the checks per side; `probes`, `localapi` and `link_key` what they share
(the firewall's rule and verdict are `tailscale_wsl2.windows`'s); `system` the seams to the
running system; `command` the wiring.
"""

from tailscale_wsl2.doctor.command import run_doctor

__all__ = ["run_doctor"]
