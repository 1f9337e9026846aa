"""tools/check_doctor_report.py: what `make dist` accepts from the installed program's doctor."""

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tailscale_wsl2 import __version__
from tests.support import ROOT


def load_tool() -> ModuleType:
    # tools/ holds scripts, not a package.
    spec = importlib.util.spec_from_file_location(
        "check_doctor_report", ROOT / "tools" / "check_doctor_report.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = load_tool()

GOOD = {
    "tool": "tailscale-wsl2",
    "version": __version__,
    "side": "wsl",
    "status": "failure",
    "checks": [{"id": "a", "status": "failure", "finding": "f", "fix": "x", "details": []}],
}


def fake_program(tmp_path: Path, status: int, stdout: str) -> str:
    script = tmp_path / "fake-doctor"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nsys.stdout.write({stdout!r})\nsys.exit({status})\n"
    )
    script.chmod(0o755)
    return str(script)


def test_a_report_as_docs_doctor_md_describes_it_passes() -> None:
    assert tool.problems(GOOD, "wsl") == []
    assert tool.problems(GOOD, None) == []


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "not a JSON object"),
        ({k: v for k, v in GOOD.items() if k != "status"}, "no status"),
        (GOOD | {"version": "0.0.0"}, f"not from tailscale-wsl2 {__version__}"),
        (GOOD | {"side": "linux"}, "side 'linux', asked for 'wsl'"),
        (GOOD | {"checks": []}, "no checks"),
        (GOOD | {"checks": [{"id": "a"}]}, "a check not of the keys"),
    ],
)
def test_what_a_broken_report_lacks_is_named(document: object, problem: str) -> None:
    assert any(found.startswith(problem) for found in tool.problems(document, "wsl"))


def test_the_program_may_find_failures_but_must_not_crash(tmp_path: Path) -> None:
    assert tool.report_problems(fake_program(tmp_path, 1, json.dumps(GOOD)), "wsl") == []
    crashed = tool.report_problems(fake_program(tmp_path, 2, json.dumps(GOOD)), "wsl")
    assert crashed[0].startswith("exited 2")
    assert tool.report_problems(fake_program(tmp_path, 1, "Traceback"), None)[0].startswith(
        "not JSON"
    )
