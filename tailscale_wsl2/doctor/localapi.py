"""What Tailscale's LocalAPI status answer says, as a verdict both sides' checks share.

Every daemon answer carries a `Tailscale-Version` header, and `/localapi/v0/status` a JSON
document with `Version`, `BackendState` and `Self` (`HostName`, `DNSName`, `TailscaleIPs`, `OS`).
A daemon that answers but is not `Running` is a warning with the one action that gets it there;
anything that is not a status document (a relay's 502, a 401 or 403, silence) is a failure.
"""

import json
import re
from dataclasses import dataclass

from tailscale_wsl2.doctor.model import Verdict, failure, ok, warning
from tailscale_wsl2.doctor.probes import HttpAnswer, NoAnswer

__all__ = [
    "FULL_STATUS_TARGET",
    "STATUS_TARGET",
    "DaemonStatus",
    "parse_status",
    "release",
    "status_verdict",
]

# What `tailscale status` asks for, and the smaller answer without peers that the probes need
# (tailscale client/local/local.go, StatusWithoutPeers).
FULL_STATUS_TARGET = "/localapi/v0/status"
STATUS_TARGET = "/localapi/v0/status?peers=false"

_STATE_FIXES = {
    "NeedsLogin": "sign in on Windows: click Tailscale in the notification area and log in, "
    "or run `tailscale login` in a Windows terminal",
    "Stopped": "connect on Windows: run `tailscale up` in a Windows terminal, "
    "or choose Connect in Tailscale's menu",
    "NeedsMachineAuth": "approve this device in the Tailscale admin console "
    "(https://login.tailscale.com/admin/machines)",
}
_TRANSIENT_STATE_FIX = (
    "wait a moment and run doctor again; if the state stays, restart Tailscale on Windows"
)
_RELEASE = re.compile(r"(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class DaemonStatus:
    version: str
    backend_state: str
    host_name: str
    dns_name: str
    addresses: tuple[str, ...]
    os: str

    def describe(self) -> str:
        """e.g. `Tailscale 1.76.6 is Running as DESKTOP (desktop.tail1.ts.net.) 100.1.2.3`."""
        return (
            f"Tailscale {self.version or '(unknown version)'} is {self.backend_state} "
            f"as {self.host_name or '?'} ({self.dns_name or 'no DNS name'}) "
            f"{', '.join(self.addresses) or 'without Tailscale IPs'}"
        )


def parse_status(answer: HttpAnswer) -> DaemonStatus:
    """The fields doctor reports from a status answer; ValueError if it is not one."""
    document = json.loads(answer.body)
    if not isinstance(document, dict) or "BackendState" not in document:
        raise ValueError("not a LocalAPI status document")
    me = document.get("Self") or {}
    return DaemonStatus(
        version=answer.headers.get("tailscale-version") or str(document.get("Version", "")),
        backend_state=str(document["BackendState"]),
        host_name=str(me.get("HostName", "")),
        dns_name=str(me.get("DNSName", "")),
        addresses=tuple(str(address) for address in me.get("TailscaleIPs") or ()),
        os=str(me.get("OS", "")),
    )


def release(version: str) -> tuple[int, int, int] | None:
    """major.minor.patch of a Tailscale version like `1.76.6-t1234abcd-g5678ef90`."""
    match = _RELEASE.match(version.strip())
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def _state_verdict(status: DaemonStatus, details: list[str]) -> Verdict:
    if status.backend_state == "Running":
        return ok(status.describe(), details)
    fix = _STATE_FIXES.get(status.backend_state, _TRANSIENT_STATE_FIX)
    return warning(status.describe(), fix, details)


def status_verdict(
    answer: HttpAnswer | NoAnswer, *, where: str, unanswered_fix: str
) -> tuple[Verdict, DaemonStatus | None]:
    """The verdict on a status answer from `where`, and the status where there is one."""
    details = [f"asked {where}"]
    if isinstance(answer, NoAnswer):
        return failure(f"no LocalAPI answer from {where}: {answer.reason}", unanswered_fix), None
    if answer.status != 200:
        quoted = f"HTTP {answer.status}: {answer.first_body_line()!r}"
        return failure(f"{where} answered {quoted}", unanswered_fix, details), None
    try:
        status = parse_status(answer)
    except (ValueError, AttributeError) as exc:  # AttributeError: `Self` is not an object
        return failure(f"{where} answered, but not with a status: {exc}", unanswered_fix), None
    return _state_verdict(status, details), status
