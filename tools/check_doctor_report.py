"""Run an installed `tailscale-wsl2 doctor --json` as detected and as each half; check each report.

`make dist` runs it on the program installed from the wheel. doctor's exit status says whether
the system is healthy, which a build machine is not (1), so what is checked is that the program
ran and said so in the document scripts rely on: valid JSON with the keys docs/doctor.md
promises, this source tree's version, and the side it was asked for. Each half imports its own
modules, so running both also shows that the wheel carries them.

    python tools/check_doctor_report.py PROGRAM
"""

import json
import subprocess
import sys
from typing import Any

from tailscale_wsl2 import __version__

__all__ = ["problems"]

DOCUMENT_KEYS = {"tool", "version", "side", "status", "checks"}
CHECK_KEYS = {"id", "status", "finding", "fix", "details"}
# doctor's statuses: 0 healthy, 1 a check failed. 2 would be bad usage; anything else a crash.
DOCTOR_STATUSES = (0, 1)


def _check_problems(checks: Any) -> list[str]:
    if not checks or not isinstance(checks, list):
        return ["no checks"]
    return [
        f"a check not of the keys {', '.join(sorted(CHECK_KEYS))}: {check}"
        for check in checks
        if not isinstance(check, dict) or CHECK_KEYS - check.keys()
    ]


def problems(document: Any, side: str | None) -> list[str]:
    """What is wrong with the report `document` (for `side`, when given); empty if nothing."""
    if not isinstance(document, dict):
        return ["not a JSON object"]
    found = []
    if missing := DOCUMENT_KEYS - document.keys():
        found.append(f"no {', '.join(sorted(missing))}")
    if (document.get("tool"), document.get("version")) != ("tailscale-wsl2", __version__):
        found.append(f"not from tailscale-wsl2 {__version__}")
    if side is not None and document.get("side") != side:
        found.append(f"side {document.get('side')!r}, asked for {side!r}")
    return found + _check_problems(document.get("checks"))


def report_problems(program: str, side: str | None) -> list[str]:
    """Run `program doctor --json` (as `side`, when given) and say what is wrong with it."""
    argv = [program, "doctor", "--json"] + (["--side", side] if side else [])
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode not in DOCTOR_STATUSES:
        return [f"exited {done.returncode}: {done.stderr.strip()}"]
    try:
        document = json.loads(done.stdout)
    except ValueError as exc:
        return [f"not JSON ({exc}): {done.stdout[:200]!r}"]
    return problems(document, side)


def main(program: str) -> int:
    failed = False
    for side in (None, "wsl", "windows"):
        name = f"doctor --json{f' --side {side}' if side else ''}"
        found = report_problems(program, side)
        print(f"{name}: {'; '.join(found) or f'a report from tailscale-wsl2 {__version__}'}")
        failed = failed or bool(found)
    return int(failed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
