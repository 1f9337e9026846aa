"""What the e2e job expects of the logon task as real Windows gives it back, and of `status
--json` while the task runs: pure checks, so that they are tested here on samples (the job
itself runs only on Windows).

The task is read back with `schtasks /Query /XML`, the registered definition, not the file
install wrote: what counts is what Task Scheduler kept. Windows may give the user back in
another form than install wrote it (`DOMAIN\\user` or the user's SID), so either is accepted.
"""

import json
from collections.abc import Collection, Sequence
from pathlib import PureWindowsPath
from typing import Any

from tailscale_wsl2.install.windows_task import (
    NORMAL_PRIORITY,
    RESTART_COUNT,
    RESTART_INTERVAL,
    TaskFields,
)

__all__ = ["running_half", "task_checks"]


def task_checks(
    fields: TaskFields, *, command: str, arguments: Sequence[str], user_ids: Collection[str]
) -> list[tuple[bool, str]]:
    """(holds, what) for each field that matters, in the order the job prints them."""
    wanted_users = {user.lower() for user in user_ids}
    return [
        (fields.written_by_install, "the task is the one install writes"),
        (fields.trigger_kinds == ("LogonTrigger",), "its one trigger is the logon"),
        ((fields.logon_user_id or "").lower() in wanted_users, "...of this user"),
        (fields.logon_type == "InteractiveToken", "it runs in the user's session, as the user"),
        (fields.run_level == "LeastPrivilege", "...without elevation"),
        (not fields.disallow_start_if_on_batteries, "it starts on battery"),
        (not fields.stop_if_going_on_batteries, "...and is not stopped on battery"),
        (fields.execution_time_limit == "PT0S", "it has no time limit"),
        (fields.hidden, "it is hidden"),
        (
            (fields.restart_interval, fields.restart_count) == (RESTART_INTERVAL, RESTART_COUNT),
            f"it restarts on failure every {RESTART_INTERVAL}, {RESTART_COUNT} times",
        ),
        (fields.multiple_instances_policy == "IgnoreNew", "one instance at a time"),
        (fields.priority == NORMAL_PRIORITY, "normal priority"),
        # Quotes: Task Scheduler's own window writes the path quoted; the program is the same.
        (
            PureWindowsPath(fields.command.strip('"')) == PureWindowsPath(command),
            f"it runs {command}",
        ),
        (
            all(f" {word} " in f" {fields.arguments} " for word in arguments),
            f"...with {' '.join(arguments)}",
        ),
    ]


def running_half(status_json: str) -> dict[str, Any] | None:
    """The running half as `status --json` reports it; None when none runs (or no JSON)."""
    try:
        document = json.loads(status_json)
    except ValueError:
        return None
    running = document.get("running") if isinstance(document, dict) else None
    return running if isinstance(running, dict) else None
