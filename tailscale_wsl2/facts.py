"""The facts the program is built on, each stated once, with where it comes from.

Ports, paths and names that more than one module needs live here and nowhere else, so that a
fix printed by doctor, the rule `firewall add` creates and what `up` listens on cannot drift
apart.
"""

from pathlib import Path

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_SOCKET",
    "DEFAULT_SOCKET_MODE",
    "FIREWALL_RULE_NAME",
    "LEGACY_LOCALAPI_HOST",
    "LEGACY_LOCALAPI_PORT",
    "LOCALAPI_PIPE_NAME",
    "MAX_SOCKET_PATH_BYTES",
    "PROGRAM",
]

PROGRAM = "tailscale-wsl2"

# The Windows half's TCP port: one above the LocalAPI port of Tailscale for Windows up to 1.32.
DEFAULT_PORT = 41113

# Where the Linux `tailscale` CLI looks for its daemon (tailscale paths/paths.go).
DEFAULT_SOCKET = Path("/var/run/tailscale/tailscaled.sock")

# The WSL2 half's socket: its owner (root) and the group of the user who ran sudo.
DEFAULT_SOCKET_MODE = 0o660

# WSL's init sets this in every session it starts: the distro's name, under which Windows
# reaches the distro's files (\\wsl$\<name>\...).
DISTRO_NAME_VARIABLE = "WSL_DISTRO_NAME"

# Tailscale for Windows 1.34 and later serves its LocalAPI here (tailscale paths/paths.go).
LOCALAPI_PIPE_NAME = r"\\.\pipe\ProtectedPrefix\Administrators\Tailscale\tailscaled"

# Tailscale for Windows up to 1.32 (safesocket.go, WindowsLocalPort).
LEGACY_LOCALAPI_HOST = "127.0.0.1"
LEGACY_LOCALAPI_PORT = 41112

# The Windows Defender Firewall rule that lets WSL2 in: `firewall add` makes it, doctor and
# `up` look for it by this name.
FIREWALL_RULE_NAME = PROGRAM

# The longest path a Unix socket may have on Linux (sun_path holds 108 bytes with the NUL): `up`
# refuses a longer one (a socket linked into place there could not be connected to), and doctor
# names it.
MAX_SOCKET_PATH_BYTES = 107
