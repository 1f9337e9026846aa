"""The doctor's runner and rendering: dependencies, crashes, marks, JSON, exit status."""

import json

from tailscale_wsl2.doctor.model import (
    Check,
    Result,
    Status,
    Verdict,
    exit_status,
    failure,
    ok,
    render_json,
    render_text,
    run_checks,
    warning,
)


def returning(verdict: Verdict, calls: list[str], name: str) -> Check[None]:
    async def run(context: None) -> Verdict:
        calls.append(name)
        return verdict

    return Check(name, run)


async def test_a_failed_prerequisite_skips_its_dependants_without_running_them() -> None:
    calls: list[str] = []
    checks = [
        returning(failure("down", "start it"), calls, "a"),
        Check("b", returning(ok("fine"), calls, "b").run, needs=("a",)),
        Check("c", returning(ok("fine"), calls, "c").run, needs=("b",)),
        returning(warning("meh", "tune it"), calls, "d"),
        Check("e", returning(ok("fine"), calls, "e").run, needs=("d",)),
    ]
    results = await run_checks(checks, None)
    assert calls == ["a", "d", "e"]
    assert [(r.check_id, r.verdict.status, r.verdict.finding) for r in results] == [
        ("a", Status.FAILURE, "down"),
        ("b", Status.SKIPPED, "needs a (failure)"),
        ("c", Status.SKIPPED, "needs b (skipped)"),
        ("d", Status.WARNING, "meh"),
        ("e", Status.OK, "fine"),  # a warning does not block
    ]


async def crash(context: None) -> Verdict:
    raise KeyError("Self")


async def test_a_crashing_check_becomes_one_crashed_line_and_the_others_still_run() -> None:
    calls: list[str] = []
    results = await run_checks([Check("boom", crash), returning(ok("fine"), calls, "next")], None)
    crashed = results[0].verdict
    assert crashed.status is Status.CRASHED
    assert crashed.finding == "the check crashed: KeyError: 'Self'"
    assert crashed.fix is not None
    assert "please report it" in crashed.fix
    assert crashed.details[0] == "Traceback (most recent call last):"
    assert calls == ["next"]


RESULTS = [
    Result("platform", ok("WSL2", ["kernel 5.15"])),
    Result("socket", failure("no socket at /s", "run `sudo tailscale-wsl2 up`")),
    Result("cli", warning("old CLI", "upgrade it")),
    Result("end-to-end", Verdict(Status.SKIPPED, "needs socket (failure)")),
]


def test_text_has_a_marked_line_per_check_a_fix_under_problems_and_a_summary() -> None:
    assert render_text(RESULTS, verbose=False).splitlines() == [
        "[✓] platform    WSL2",
        "[✗] socket      no socket at /s",
        "    fix: run `sudo tailscale-wsl2 up`",
        "[!] cli         old CLI",
        "    fix: upgrade it",
        "[-] end-to-end  needs socket (failure)",
        "doctor: 1 failure, 1 warning, 1 skipped (4 checks)",
    ]


def test_details_only_with_verbose_and_ascii_marks_where_the_console_lacks_them() -> None:
    lines = render_text(RESULTS[:2], verbose=True, encoding="ascii").splitlines()
    assert lines == [
        "[+] platform  WSL2",
        "    - kernel 5.15",
        "[x] socket    no socket at /s",
        "    fix: run `sudo tailscale-wsl2 up`",
        "doctor: 1 failure (2 checks)",
    ]


def test_all_green_summary() -> None:
    assert render_text(RESULTS[:1], verbose=False).splitlines()[-1] == (
        "doctor: no issues found (1 check)"
    )


def test_json_document_shape() -> None:
    document = json.loads(render_json(RESULTS, side="wsl", version="0.1.0"))
    assert document["tool"] == "tailscale-wsl2"
    assert document["version"] == "0.1.0"
    assert document["side"] == "wsl"
    assert document["status"] == "failure"
    assert document["checks"][0] == {
        "id": "platform",
        "status": "ok",
        "finding": "WSL2",
        "fix": None,
        "details": ["kernel 5.15"],
    }
    assert [check["status"] for check in document["checks"]] == [
        "ok",
        "failure",
        "warning",
        "skipped",
    ]
    assert json.loads(render_json(RESULTS[2:3], side="wsl", version="x"))["status"] == "warning"


def test_exit_status_is_1_only_for_failures() -> None:
    assert exit_status(RESULTS) == 1
    assert exit_status([RESULTS[0], RESULTS[2], RESULTS[3]]) == 0


async def test_a_crash_has_its_own_status_in_json_and_still_fails_the_run() -> None:
    calls: list[str] = []
    checks = [
        Check("boom", crash),
        Check("after", returning(ok("fine"), calls, "after").run, needs=("boom",)),
        returning(failure("down", "fix it"), calls, "broken"),
    ]
    results = await run_checks(checks, None)
    document = json.loads(render_json(results, side="wsl", version="x"))
    # A script tells a bug in doctor from a finding: `crashed`, not `failure`.
    assert document["status"] == "crashed"
    assert [check["status"] for check in document["checks"]] == ["crashed", "skipped", "failure"]
    assert document["checks"][1]["finding"] == "needs boom (crashed)"
    assert exit_status(results) == 1
    assert exit_status(results[:1]) == 1
    lines = render_text(results, verbose=False).splitlines()
    assert lines[0] == "[?] boom    the check crashed: KeyError: 'Self'"
    assert lines[-1] == "doctor: 1 crashed, 1 failure, 1 skipped (3 checks)"
