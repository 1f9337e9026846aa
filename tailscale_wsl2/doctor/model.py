"""The doctor's vocabulary: checks, their verdicts, running a list of them, and printing results.

Behaviour as data, after flutter doctor's validators and brew doctor's checks: a `Check` is an
id, the ids of the checks it needs, and an async function from a context to a `Verdict`.
`run_checks` runs the list in order. A check whose prerequisite failed or was skipped is not run
but reported as skipped with the reason, so one broken hop shows as one failure, not a cascade.
A check that raises becomes one "crashed" line whose traceback is kept in its details (shown only
with -v), never a traceback in the user's face. Crashed is a status of its own, not a failure:
a script reading `--json` must be able to tell a bug in doctor from a finding about the system.

Results render as one marked line each (with an indented fix under every warning and failure)
for people, or as one JSON document for scripts and bug reports.
"""

import enum
import json
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "Check",
    "Result",
    "Status",
    "Verdict",
    "exit_status",
    "failure",
    "ok",
    "render_json",
    "render_text",
    "run_checks",
    "warning",
]

Context = TypeVar("Context")

BUG_REPORT_FIX = (
    "this is a bug in tailscale-wsl2: please report it with the output of "
    "`tailscale-wsl2 doctor --json`"
)


class Status(enum.Enum):
    OK = "ok"
    WARNING = "warning"
    FAILURE = "failure"
    SKIPPED = "skipped"
    CRASHED = "crashed"  # the check itself failed: a bug in doctor, not a finding


@dataclass(frozen=True)
class Verdict:
    """What one check found: a status, a short finding, the fix, and info lines for -v."""

    status: Status
    finding: str
    fix: str | None = None
    details: tuple[str, ...] = ()


def ok(finding: str, details: Sequence[str] = ()) -> Verdict:
    return Verdict(Status.OK, finding, None, tuple(details))


def warning(finding: str, fix: str, details: Sequence[str] = ()) -> Verdict:
    return Verdict(Status.WARNING, finding, fix, tuple(details))


def failure(finding: str, fix: str, details: Sequence[str] = ()) -> Verdict:
    return Verdict(Status.FAILURE, finding, fix, tuple(details))


@dataclass(frozen=True)
class Check(Generic[Context]):
    """One diagnosis: `run` is only called when none of the checks in `needs` failed."""

    id: str
    run: Callable[[Context], Awaitable[Verdict]]
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Result:
    check_id: str
    verdict: Verdict


def _blocked_by(check: Check[Context], statuses: dict[str, Status]) -> Verdict | None:
    """A skipped verdict naming the prerequisites that failed or were skipped; None if none."""
    blocking = [
        f"{need} ({statuses[need].value})"
        for need in check.needs
        if statuses[need] in (Status.FAILURE, Status.SKIPPED, Status.CRASHED)
    ]
    if not blocking:
        return None
    return Verdict(Status.SKIPPED, f"needs {', '.join(blocking)}")


def _crashed(exc: Exception) -> Verdict:
    lines = "".join(traceback.format_exception(exc)).splitlines()
    what = f"the check crashed: {type(exc).__name__}: {exc}"
    return Verdict(Status.CRASHED, what, BUG_REPORT_FIX, tuple(lines))


async def _run_one(check: Check[Context], context: Context) -> Verdict:
    try:
        return await check.run(context)
    except Exception as exc:  # a crashing check must not hide the others' results
        return _crashed(exc)


async def run_checks(checks: Sequence[Check[Context]], context: Context) -> list[Result]:
    """Run `checks` in order (each one's `needs` must come before it)."""
    statuses: dict[str, Status] = {}
    results = []
    for check in checks:
        verdict = _blocked_by(check, statuses) or await _run_one(check, context)
        statuses[check.id] = verdict.status
        results.append(Result(check.id, verdict))
    return results


def exit_status(results: Sequence[Result]) -> int:
    """1 when any check failed or crashed; warnings alone leave it 0."""
    return int(any(result.verdict.status in _FAILED for result in results))


_FAILED = (Status.FAILURE, Status.CRASHED)


def _overall(results: Sequence[Result]) -> Status:
    statuses = {result.verdict.status for result in results}
    for worst in (Status.CRASHED, Status.FAILURE, Status.WARNING):
        if worst in statuses:
            return worst
    return Status.OK


_MARKS = {
    Status.OK: "✓",
    Status.WARNING: "!",
    Status.FAILURE: "✗",
    Status.SKIPPED: "-",
    Status.CRASHED: "?",
}
# For consoles whose code page has no ✓ or · (cp437 output redirected to a file, say).
_ASCII_MARKS = {**_MARKS, Status.OK: "+", Status.FAILURE: "x"}


def _marks(encoding: str) -> dict[Status, str]:
    try:
        ("".join(_MARKS.values()) + "·").encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return _ASCII_MARKS
    return _MARKS


_PLURALS = {
    Status.CRASHED: "crashed",
    Status.FAILURE: "failures",
    Status.WARNING: "warnings",
    Status.SKIPPED: "skipped",
}


def _summary(results: Sequence[Result]) -> str:
    found = []
    for status, plural in _PLURALS.items():
        count = sum(result.verdict.status is status for result in results)
        if count:
            found.append(f"{count} {status.value if count == 1 else plural}")
    checks = f"{len(results)} check{'' if len(results) == 1 else 's'}"
    return f"doctor: {', '.join(found) or 'no issues found'} ({checks})"


def render_text(results: Sequence[Result], *, verbose: bool, encoding: str = "utf-8") -> str:
    """One marked line per check, its fix indented below; details only when `verbose`."""
    marks = _marks(encoding)
    bullet = "·" if marks is _MARKS else "-"
    width = max((len(result.check_id) for result in results), default=0)
    lines = []
    for result in results:
        verdict = result.verdict
        lines.append(f"[{marks[verdict.status]}] {result.check_id:<{width}}  {verdict.finding}")
        if verdict.fix is not None:
            lines.append(f"    fix: {verdict.fix}")
        if verbose:
            lines += [f"    {bullet} {detail}" for detail in verdict.details]
    lines.append(_summary(results))
    return "\n".join(lines)


def render_json(results: Sequence[Result], *, side: str, version: str) -> str:
    """The results as one JSON document; its keys are stable for scripts."""
    document = {
        "tool": "tailscale-wsl2",
        "version": version,
        "side": side,
        "status": _overall(results).value,
        "checks": [
            {
                "id": result.check_id,
                "status": result.verdict.status.value,
                "finding": result.verdict.finding,
                "fix": result.verdict.fix,
                "details": list(result.verdict.details),
            }
            for result in results
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False)
