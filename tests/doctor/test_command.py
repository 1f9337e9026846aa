"""doctor's wiring: a half's checks only on that half's own system."""

import subprocess
import sys

import pytest

from tailscale_wsl2.doctor.command import other_system
from tailscale_wsl2.doctor.model import Status
from tailscale_wsl2.plan.halves import HalfName, Options


@pytest.mark.parametrize(
    ("half", "platform", "finding", "fix"),
    [
        (
            "windows",
            "linux",
            "the Windows half's checks read Windows (its services, adapters and firewall), "
            "and this is not Windows (linux)",
            "run `tailscale-wsl2.exe doctor --side windows --port 41200` in Windows",
        ),
        (
            "wsl",
            "win32",
            "the WSL2 half's checks read the Linux of WSL2 (/proc, /etc, its socket), "
            "and this is Windows",
            "run `tailscale-wsl2 doctor --side wsl --port 41200` inside WSL2",
        ),
    ],
)
def test_the_checks_of_the_other_system_s_half_say_where_to_run_them(
    half: HalfName, platform: str, finding: str, fix: str
) -> None:
    result = other_system(half, Options(side=half, port=41200), platform)
    assert result is not None
    assert (result.check_id, result.verdict.status) == ("platform", Status.FAILURE)
    assert (result.verdict.finding, result.verdict.fix) == (finding, fix)


@pytest.mark.parametrize(("half", "platform"), [("windows", "win32"), ("wsl", "linux")])
def test_a_half_s_checks_run_on_its_own_system(half: HalfName, platform: str) -> None:
    assert other_system(half, Options(side=half), platform) is None


def test_doctor_for_the_other_half_answers_in_one_result_and_fails() -> None:
    other = "wsl" if sys.platform == "win32" else "windows"
    doctor = [sys.executable, "-m", "tailscale_wsl2", "doctor", "--side", other]
    run = subprocess.run(doctor, capture_output=True, text=True, check=False, timeout=60)
    assert run.returncode == 1, run.stderr
    assert run.stdout.splitlines()[-1] == "doctor: 1 failure (1 check)"
    assert run.stderr == ""
