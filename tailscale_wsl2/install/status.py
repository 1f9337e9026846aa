"""What is installed on this side, for `status`: how the half gets started, what it runs, where
its log goes. Read from the files install writes (the unit, /etc/wsl.conf) and the task's
definition as `schtasks /Query /XML` prints it, so `status` tells the truth about a service
someone edited or made by hand, not only about one install made.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from .paths import WSL_LOG, windows_paths
from .systemd import UNIT_NAME, UnitState, classify_unit
from .windows_task import TASK_NAME, parse_task_xml
from .wslconf import WSL_CONF, our_boot_segment

__all__ = ["Installation", "windows_installation", "wsl_installation"]

JOURNAL_COMMAND = f"journalctl -u {UNIT_NAME}"


@dataclass(frozen=True)
class Installation:
    """How this side's half is started (None: it is not installed)."""

    how: str | None
    runs: str | None = None  # the command line the service manager runs
    log: str | None = None  # a file, or the command that shows the journal
    problem: str | None = None  # what is wrong with it, when something is


NOT_INSTALLED = Installation(None)


def _exec_start(unit_text: str) -> str | None:
    return next(
        (
            line.partition("=")[2]
            for line in unit_text.splitlines()
            if line.startswith("ExecStart=")
        ),
        None,
    )


def wsl_installation(unit_text: str | None, wsl_conf_text: str | None) -> Installation:
    """From the unit file's text and /etc/wsl.conf's (None: the file does not exist)."""
    state = classify_unit(unit_text)
    if unit_text is not None and state is not UnitState.ABSENT:
        problem = None if state is UnitState.OURS_UNCHANGED else f"the unit was {state.value}"
        return Installation(
            f"the systemd service {UNIT_NAME}", _exec_start(unit_text), JOURNAL_COMMAND, problem
        )
    segment = our_boot_segment(wsl_conf_text)
    if segment is not None:
        return Installation(f"the [boot] command in {WSL_CONF}", segment, WSL_LOG)
    return NOT_INSTALLED


def windows_installation(task_xml: str | bytes | None, environ: Mapping[str, str]) -> Installation:
    """From `schtasks /Query /TN tailscale-wsl2 /XML`'s output (None: no such task)."""
    if task_xml is None:
        return NOT_INSTALLED
    try:
        fields = parse_task_xml(task_xml)
    except ValueError as exc:
        return Installation(f"the logon task {TASK_NAME}", problem=str(exc))
    problem = None if fields.written_by_install else "the task was not written by install"
    return Installation(
        f"the logon task {TASK_NAME}",
        f"{fields.command} {fields.arguments}".strip(),
        windows_paths(environ).log_file,
        problem,
    )
