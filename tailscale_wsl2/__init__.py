"""tailscale-wsl2: use the Windows host's Tailscale from inside WSL2.

Two halves of one relay: the Windows half forwards TCP from the WSL adapter to
Tailscale's LocalAPI; the WSL2 half forwards the `tailscale` CLI's Unix socket
to the Windows half.
"""

__version__ = "0.1.0"
