"""Which side of the relay this process runs on, and how WSL2 networks with Windows.

Side detection: one tiny predicate per signal, each citing its evidence (in the manner of
tailscale's `hostinfo.go`). The kernel release tells WSL1 from WSL2; since a custom WSL2 kernel
need not mention Microsoft, the environment and the interop registration count as WSL signals
too, and any WSL signal without a WSL1 kernel means WSL2.

Networking mode: `wslinfo --networking-mode` answers where it exists (WSL 2.0.14 and later).
Without it, the interface list decides: mirrored networking adds an interface named `loopback0`;
otherwise we assume NAT, WSL's default.

Every decision is a pure function of text and values handed in, so tests feed real-world samples;
the `read_*` functions are the thin layer that collects those inputs from the running system.
"""

import enum
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tailscale_wsl2.facts import DISTRO_NAME_VARIABLE
from tailscale_wsl2.system import read_text_if_present, run_command

__all__ = [
    "DetectedMode",
    "NetworkingMode",
    "Side",
    "detect_networking_mode",
    "detect_side",
    "parse_proc_net_dev_interfaces",
    "parse_wslinfo_networking_mode",
    "read_networking_mode",
    "read_side",
]

PROC_VERSION = Path("/proc/version")
PROC_NET_DEV = Path("/proc/net/dev")
WSL_INTEROP_BINFMT = Path("/proc/sys/fs/binfmt_misc/WSLInterop")
WSLINFO_TIMEOUT_SECONDS = 2


class Side(enum.Enum):
    """Where this process runs; LINUX stands for anything that is neither Windows nor WSL."""

    WINDOWS = "windows"
    WSL2 = "wsl2"
    WSL1 = "wsl1"
    LINUX = "linux"


def _is_windows(platform: str) -> bool:
    # `sys.platform` is "win32" on every Windows build, 64-bit included.
    return platform == "win32"


def _is_wsl1_kernel(kernel_release: str, proc_version: str) -> bool:
    # WSL1 has no Linux kernel: lxcore reports a fixed release like `4.4.0-19041-Microsoft`
    # (capital M) and /proc/version credits `Microsoft@Microsoft.com`. No custom kernel can
    # replace it, so this test is decisive for WSL1.
    return (
        "Microsoft" in kernel_release and "WSL2" not in kernel_release
    ) or "Microsoft@Microsoft.com" in proc_version


def _is_microsoft_wsl2_kernel(kernel_release: str, proc_version: str) -> bool:
    # Microsoft's WSL2 kernels say so in lower case: `5.15.153.1-microsoft-standard-WSL2`,
    # earlier `4.19.104-microsoft-standard`.
    return "microsoft" in kernel_release or "microsoft" in proc_version


def _environment_says_wsl(environ: Mapping[str, str]) -> bool:
    # WSL's init puts WSL_DISTRO_NAME and WSL_INTEROP (`/run/WSL/<pid>_interop`) into every
    # session it starts; under systemd, WSL marks the container as `container=wsl`.
    return (
        DISTRO_NAME_VARIABLE in environ
        or "WSL_INTEROP" in environ
        or environ.get("container") == "wsl"
    )


def detect_side(
    *,
    platform: str,
    kernel_release: str,
    proc_version: str,
    environ: Mapping[str, str],
    interop_registered: bool,
) -> Side:
    """Decide the side from `sys.platform`, `uname -r`, /proc/version, the environment, and
    whether the `WSLInterop` binfmt_misc entry exists."""
    if _is_windows(platform):
        return Side.WINDOWS
    if _is_wsl1_kernel(kernel_release, proc_version):
        return Side.WSL1
    # The interop entry can be wiped by systemd-binfmt and the variables are missing in system
    # services, so each signal alone is enough.
    if (
        _is_microsoft_wsl2_kernel(kernel_release, proc_version)
        or _environment_says_wsl(environ)
        or interop_registered
    ):
        return Side.WSL2
    return Side.LINUX


# pragma: no mutate start
# The seams that read this system (uname, /proc, wslinfo) are tested by running on it
# (tests/wsl/test_side.py): mutating them would measure the machine, not the tests.
def _kernel_release() -> str:
    # os.uname exists only on Unix; Windows needs no kernel release to be recognised.
    return os.uname().release if hasattr(os, "uname") else ""


def read_side() -> Side:
    """The side this process runs on."""
    return detect_side(
        platform=sys.platform,
        kernel_release=_kernel_release(),
        proc_version=read_text_if_present(PROC_VERSION) or "",
        environ=os.environ,
        interop_registered=WSL_INTEROP_BINFMT.exists(),
    )


# pragma: no mutate end


class NetworkingMode(enum.Enum):
    """WSL2's networking mode, as far as it matters for reaching the Windows host."""

    NAT = "nat"
    MIRRORED = "mirrored"
    OTHER = "other"  # bridged, virtioproxy, none, or WSL1's shared stack
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class DetectedMode:
    """A networking mode and the method that found it, e.g. "wslinfo --networking-mode"."""

    mode: NetworkingMode
    method: str


# Every answer microsoft/WSL's src/linux/init/wslinfo.cpp can print.
_WSLINFO_MODES = {
    "nat": NetworkingMode.NAT,
    "mirrored": NetworkingMode.MIRRORED,
    "bridged": NetworkingMode.OTHER,
    "virtioproxy": NetworkingMode.OTHER,
    "none": NetworkingMode.OTHER,
    "wsl1": NetworkingMode.OTHER,
}

WSLINFO_METHOD = "wslinfo --networking-mode"
LOOPBACK0_METHOD = "loopback0 interface in /proc/net/dev (only mirrored networking creates it)"
NO_LOOPBACK0_METHOD = "no loopback0 interface in /proc/net/dev (NAT is WSL's default)"
NO_EVIDENCE_METHOD = "neither wslinfo nor /proc/net/dev answered"


def parse_wslinfo_networking_mode(output: str) -> NetworkingMode:
    """The mode `wslinfo --networking-mode` printed; UNKNOWN for anything else (an error text)."""
    return _WSLINFO_MODES.get(output.strip().lower(), NetworkingMode.UNKNOWN)


def parse_proc_net_dev_interfaces(text: str) -> list[str]:
    """Interface names in /proc/net/dev: after two header lines, one `name: counters` line each.

    Linux interface names contain no colon and no whitespace, so the first colon ends the name;
    the header lines have no colon at all.
    """
    names = []
    for line in text.splitlines():
        name, colon, _ = line.partition(":")
        name = name.strip()
        if colon and name and not any(character.isspace() for character in name):
            names.append(name)
    return names


def detect_networking_mode(
    *, wslinfo_output: str | None, proc_net_dev_text: str | None
) -> DetectedMode:
    """The networking mode from wslinfo's answer where it has one, else from the interfaces.

    microsoft/WSL issues #10650 and #10884 show `loopback0` next to the mirrored `ethN`
    interfaces; NAT mode has only `eth0` (and `lo`). WSL releases before wslinfo existed
    (below 2.0.14) offered mirrored networking already, so the interface test covers them;
    bridged networking on those old releases would be taken for NAT.
    """
    if wslinfo_output is not None:
        mode = parse_wslinfo_networking_mode(wslinfo_output)
        if mode is not NetworkingMode.UNKNOWN:
            return DetectedMode(mode, WSLINFO_METHOD)
    if proc_net_dev_text is None:
        return DetectedMode(NetworkingMode.UNKNOWN, NO_EVIDENCE_METHOD)
    if "loopback0" in parse_proc_net_dev_interfaces(proc_net_dev_text):
        return DetectedMode(NetworkingMode.MIRRORED, LOOPBACK0_METHOD)
    return DetectedMode(NetworkingMode.NAT, NO_LOOPBACK0_METHOD)


# pragma: no mutate start
# The seams that run wslinfo and read /proc (see _kernel_release).
def _run_wslinfo() -> str | None:
    # None where wslinfo is missing (older WSL), hangs, or rejects the option.
    answer = run_command(["wslinfo", "--networking-mode"], timeout=WSLINFO_TIMEOUT_SECONDS)
    return answer.output if answer and answer.returncode == 0 else None


def read_networking_mode() -> DetectedMode:
    """This WSL2 instance's networking mode (blocks for up to two seconds on wslinfo)."""
    return detect_networking_mode(
        wslinfo_output=_run_wslinfo(), proc_net_dev_text=read_text_if_present(PROC_NET_DEV)
    )


# pragma: no mutate end
