"""`tailscale-wsl2 status`: this side's half, installed or not, running or not, and its next hop.

Two sources meet here, which is why this is in `cli`: what install wrote (install/status.py)
and what the running half reports about itself (serve/state.py). A state file whose process
has exited (the half was killed) counts as not running, and is shown as such. Healthy means
running with its next hop reachable as the half's own connections last found it; only then
does `status` exit 0.
"""

import calendar
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from tailscale_wsl2.facts import PROGRAM
from tailscale_wsl2.install.status import Installation
from tailscale_wsl2.serve.state import RunState

__all__ = ["StatusReport", "render_json", "render_text"]

_HALF_NAMES = {"wsl": "WSL2 half", "windows": "Windows half"}


@dataclass(frozen=True)
class StatusReport:
    half: str  # "wsl" or "windows"
    installation: Installation
    running: RunState | None
    # A state left by a half that no longer runs (killed): shown, never taken for running.
    stale: RunState | None = None

    @property
    def healthy(self) -> bool:
        return self.running is not None and self.running.next_hop.health == "reachable"

    @property
    def log(self) -> str | None:
        if self.running is not None and self.running.log_file:
            return self.running.log_file
        return self.installation.log

    def summary(self) -> str:
        name = f"{PROGRAM} ({_HALF_NAMES.get(self.half, self.half)})"
        if self.running is None:
            installed = "installed" if self.installation.how else "not installed"
            return f"{name}: not running ({installed})"
        hop = self.running.next_hop.health
        return f"{name}: running, next hop {hop}" + ("" if self.healthy else ": not healthy")


def _local_time(iso_utc: str) -> str:
    try:
        moment = time.strptime(iso_utc, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return iso_utc
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(calendar.timegm(moment)))


def _installation_lines(installation: Installation) -> list[str]:
    if installation.how is None:
        lines = ["installed:  no"]
    else:
        lines = [f"installed:  {installation.how}"]
        if installation.runs:
            lines.append(f"  runs:     {installation.runs}")
    if installation.problem:
        lines.append(f"  problem:  {installation.problem}")
    return lines


def _running_lines(report: StatusReport) -> list[str]:
    state = report.running
    if state is None:
        lines = ["running:    no"]
        if report.stale is not None:
            lines.append(
                f"  (its last state is from pid {report.stale.pid}, "
                f"started {_local_time(report.stale.started)}, which has exited)"
            )
        return lines
    hop = state.next_hop
    hop_line = f"next hop:   {hop.health} since {_local_time(hop.since)}"
    return [
        f"running:    pid {state.pid} since {_local_time(state.started)}, version {state.version}",
        f"  command:  {state.executable} {' '.join(state.arguments)}".rstrip(),
        f"  listens:  {state.listening or 'nowhere yet (waiting for the WSL adapter)'}",
        f"  relays to: {state.relaying_to}",
        hop_line + (f": {hop.detail}" if hop.detail else ""),
    ]


def render_text(report: StatusReport) -> str:
    lines = [
        report.summary(),
        *_installation_lines(report.installation),
        *_running_lines(report),
        f"log:        {report.log or 'the terminal that started it'}",
    ]
    return "\n".join(lines) + "\n"


def _plain(state: RunState | None) -> dict[str, Any] | None:
    return None if state is None else asdict(state)


def render_json(report: StatusReport) -> str:
    document = {
        "half": report.half,
        "healthy": report.healthy,
        "installed": asdict(report.installation),
        "running": _plain(report.running),
        "stale_state": _plain(report.stale),
        "log": report.log,
    }
    return json.dumps(document, indent=2) + "\n"
