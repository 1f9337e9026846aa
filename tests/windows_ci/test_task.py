"""The e2e job's checks of the logon task and of `status --json`, on what install writes, on a
task made in Task Scheduler's window (its defaults), and on status documents."""

import json

from tailscale_wsl2.install.windows_task import TaskDefinition, parse_task_xml, task_xml
from tests.install import samples
from tests.windows_ci.task import running_half, task_checks

USER = "DESKTOP-7Q2K4LM\\alice"
SID = "S-1-5-21-1004336348-1177238915-682003330-1001"
INSTALLED = "C:\\Users\\alice\\AppData\\Local\\Programs\\tailscale-wsl2\\tailscale-wsl2w.exe"
ARGUMENTS = ("up", "--listen", "127.0.0.1", "--port", "50123")


def checks(document: str, command: str = INSTALLED) -> dict[str, bool]:
    fields = parse_task_xml(document)
    found = task_checks(fields, command=command, arguments=ARGUMENTS, user_ids={USER, SID})
    return {what: holds for holds, what in found}


def test_the_task_install_writes_passes_every_check() -> None:
    definition = TaskDefinition(USER, INSTALLED, (*ARGUMENTS, "--log-file", "C:\\x.log"))
    assert all(checks(task_xml(definition)).values())
    # Windows may give the user back as the SID.
    as_sid = TaskDefinition(SID, INSTALLED.upper(), (*ARGUMENTS, "--log-file", "C:\\x.log"))
    assert all(checks(task_xml(as_sid)).values())
    quoted = task_xml(definition).replace(f"<Command>{INSTALLED}", f'<Command>"{INSTALLED}"')
    assert all(checks(quoted).values())


def test_another_program_or_other_options_fail() -> None:
    definition = TaskDefinition(USER, INSTALLED, ("up", "--listen", "127.0.0.1", "--port", "5"))
    found = checks(task_xml(definition), command="C:\\elsewhere\\tailscale-wsl2w.exe")
    assert [what for what, holds in found.items() if not holds] == [
        "it runs C:\\elsewhere\\tailscale-wsl2w.exe",
        "...with up --listen 127.0.0.1 --port 50123",
    ]


def test_task_scheduler_s_defaults_fail_the_checks_that_matter() -> None:
    failed = [what for what, holds in checks(samples.EXPORTED_BY_HAND).items() if not holds]
    assert "the task is the one install writes" in failed
    assert "it starts on battery" in failed
    assert "...and is not stopped on battery" in failed
    assert "it has no time limit" in failed


def test_the_running_half_is_read_from_status_json() -> None:
    running = {"pid": 4242, "executable": INSTALLED, "arguments": list(ARGUMENTS)}
    document = {"half": "windows", "healthy": False, "running": running, "log": None}
    assert running_half(json.dumps(document)) == running
    assert running_half(json.dumps({**document, "running": None})) is None
    assert running_half("tailscale-wsl2: an error line\n") is None
    assert running_half(json.dumps({"running": "yes"})) is None
    assert running_half("[1]") is None
