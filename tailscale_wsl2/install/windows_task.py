"""The Windows half at logon: a Task Scheduler task, as XML, and the schtasks command lines.

Why a logon task of the user's own and not a service: the Windows half must talk to Tailscale
as the logged-in user (docs/windows.md, "Run it as yourself"). The definition follows the Task
Scheduler schema (namespace http://schemas.microsoft.com/windows/2004/02/mit/task, version 1.2,
Windows 7 and later); facts from Microsoft's schema reference:

- `LogonTrigger` with `UserId` starts it when that user logs on; `Principal` with
  `InteractiveToken` runs it in that user's session with no stored password, and
  `LeastPrivilege` without elevation.
- Settings omitted from a definition take the schema's defaults, several of them wrong for a
  relay: `DisallowStartIfOnBatteries` and `StopIfGoingOnBatteries` default to true, and the
  execution time limit to 72 hours. All are written out. `ExecutionTimeLimit` `PT0S` means no
  limit. `RestartOnFailure` needs both `Interval` (1 minute to 31 days) and `Count`, an
  unsignedByte of at least 1, so 255 is the most retries it can ask for.
- `Priority` defaults to 7, which starts the program below normal priority with low I/O
  priority (the class used for background work); 4 is the normal class.
- `Hidden` hides the task in the Task Scheduler window, not the program's console window: a
  console program started by the task still shows one, which is why the task runs a windowless
  copy of the program (windowless.py).

`schtasks /Create /XML FILE` reads the file as UTF-16 little-endian with a byte-order mark
(UTF-8 files, with or without a BOM, are refused as malformed: fatso83/vmware-auto-suspend#8,
chef/chef#6639), so `task_xml_bytes` writes exactly that, declaring encoding UTF-16.

`parse_task_xml` reads a definition back, applying the schema's defaults for what is absent, so
tests (and `install`, on `schtasks /Query /XML`) check the fields that matter one by one.
"""

import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PureWindowsPath

from tailscale_wsl2.errors import ActionableError

from .paths import environ_value

__all__ = [
    "TASK_NAME",
    "TaskDefinition",
    "TaskFields",
    "TaskStatus",
    "create_task_argv",
    "delete_task_argv",
    "end_task_argv",
    "parse_task_status",
    "parse_task_xml",
    "query_task_status_argv",
    "query_task_xml_argv",
    "run_task_argv",
    "schtasks_exe",
    "task_xml",
    "task_xml_bytes",
    "windows_command_line",
    "windows_user_id",
]

TASK_NAME = "tailscale-wsl2"
NAMESPACE = "http://schemas.microsoft.com/windows/2004/02/mit/task"
DESCRIPTION = (
    "Written by tailscale-wsl2 install: starts the Windows half of tailscale-wsl2 at logon. "
    "`tailscale-wsl2.exe uninstall` removes it."
)
RESTART_INTERVAL = "PT1M"
RESTART_COUNT = 255  # the schema's largest (unsignedByte)
NORMAL_PRIORITY = 4
# SCHED_S_TASK_RUNNING: the "last result" of a task that is running now.
TASK_RUNNING_RESULT = 0x41301

# What English Windows prints as a task's Status; other languages translate it.
_ENGLISH_STATUSES = frozenset({"Ready", "Running", "Disabled", "Queued", "Could not start"})
_XML_DECLARATION = re.compile(r"\A\s*<\?xml[^>]*\?>")
_BOM_UTF16_LE = b"\xff\xfe"


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ_value(environ, name)
    if not value:
        raise ActionableError(
            f"%{name}% is not set", "run install from a normal Windows session (cmd or PowerShell)"
        )
    return value


def windows_user_id(environ: Mapping[str, str]) -> str:
    """DOMAIN\\user of the user running install, the one the task is for."""
    return f"{_required(environ, 'USERDOMAIN')}\\{_required(environ, 'USERNAME')}"


def windows_command_line(arguments: Sequence[str]) -> str:
    """Arguments as one string that a Windows program's C runtime splits back into them."""
    # Task Scheduler expands %NAME% in what it runs, and no quoting stops it.
    if any("%" in argument for argument in arguments):
        raise ActionableError(
            f"an argument for the logon task contains %, which Task Scheduler expands: {arguments}",
            "use paths without % in them",
        )
    return subprocess.list2cmdline(arguments)


@dataclass(frozen=True)
class TaskDefinition:
    """The logon task: run `command` with `arguments` when `user_id` logs on."""

    user_id: str
    command: str
    arguments: tuple[str, ...]


def _element(parent: ET.Element, name: str, text: str | None = None) -> ET.Element:
    child = ET.SubElement(parent, name)
    child.text = text
    return child


def _settings(task: ET.Element) -> None:
    settings = _element(task, "Settings")
    for name, value in (
        ("MultipleInstancesPolicy", "IgnoreNew"),
        ("DisallowStartIfOnBatteries", "false"),
        ("StopIfGoingOnBatteries", "false"),
        ("AllowHardTerminate", "true"),
        ("StartWhenAvailable", "true"),
        ("AllowStartOnDemand", "true"),
        ("Enabled", "true"),
        ("Hidden", "true"),
        ("ExecutionTimeLimit", "PT0S"),
        ("Priority", str(NORMAL_PRIORITY)),
    ):
        _element(settings, name, value)
    restart = _element(settings, "RestartOnFailure")
    _element(restart, "Interval", RESTART_INTERVAL)
    _element(restart, "Count", str(RESTART_COUNT))


def task_xml(definition: TaskDefinition) -> str:
    """The task's XML text, declared UTF-16 (write it with `task_xml_bytes`)."""
    if "%" in definition.command:
        raise ActionableError(
            f"the program's path contains %, which Task Scheduler expands: {definition.command}",
            "install to a path without % in it",
        )
    # The namespace as a plain attribute: ElementTree's default_namespace refuses the
    # unqualified attributes (version, id, Context) the schema uses.
    task = ET.Element("Task", {"version": "1.2", "xmlns": NAMESPACE})
    registration = _element(task, "RegistrationInfo")
    _element(registration, "Author", "tailscale-wsl2 install")
    _element(registration, "Description", DESCRIPTION)
    trigger = _element(_element(task, "Triggers"), "LogonTrigger")
    _element(trigger, "Enabled", "true")
    _element(trigger, "UserId", definition.user_id)
    principal = _element(_element(task, "Principals"), "Principal")
    principal.set("id", "Author")
    _element(principal, "UserId", definition.user_id)
    _element(principal, "LogonType", "InteractiveToken")
    _element(principal, "RunLevel", "LeastPrivilege")
    _settings(task)
    actions = _element(task, "Actions")
    actions.set("Context", "Author")
    exec_action = _element(actions, "Exec")
    _element(exec_action, "Command", definition.command)
    if definition.arguments:
        _element(exec_action, "Arguments", windows_command_line(definition.arguments))
    ET.indent(task)
    body = ET.tostring(task, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-16"?>\n{body}\n'


def task_xml_bytes(definition: TaskDefinition) -> bytes:
    """The file `schtasks /Create /XML` reads: UTF-16 little-endian with its BOM, CRLF lines."""
    return _BOM_UTF16_LE + task_xml(definition).replace("\n", "\r\n").encode("utf-16-le")


@dataclass(frozen=True)
class TaskFields:
    """What a task definition says, schema defaults filled in for what it leaves out."""

    description: str
    trigger_kinds: tuple[str, ...]
    logon_user_id: str | None
    principal_user_id: str | None
    logon_type: str | None
    run_level: str
    disallow_start_if_on_batteries: bool
    stop_if_going_on_batteries: bool
    execution_time_limit: str
    multiple_instances_policy: str
    hidden: bool
    start_when_available: bool
    allow_hard_terminate: bool
    enabled: bool
    priority: int
    restart_interval: str | None
    restart_count: int | None
    command: str
    arguments: str

    @property
    def written_by_install(self) -> bool:
        return self.description.startswith("Written by tailscale-wsl2 install")


def _decode(document: str | bytes) -> str:
    if isinstance(document, str):
        return document
    if document.startswith((_BOM_UTF16_LE, b"\xfe\xff")):
        return document.decode("utf-16")
    return document.decode("utf-8-sig")


def _find(element: ET.Element, path: str) -> ET.Element | None:
    return element.find("/".join(f"{{{NAMESPACE}}}{step}" for step in path.split("/")))


def _text(root: ET.Element, path: str, default: str | None = None) -> str | None:
    found = _find(root, path)
    return default if found is None or found.text is None else found.text.strip()


def _flag(root: ET.Element, path: str, default: bool) -> bool:
    text = _text(root, path)
    return default if text is None else text.lower() in ("true", "1")


def _optional_int(text: str | None) -> int | None:
    return None if text is None else int(text)


def parse_task_xml(document: str | bytes) -> TaskFields:
    """The fields that matter, from a task's XML (ours, or `schtasks /Query /XML`'s)."""
    text = _XML_DECLARATION.sub("", _decode(document), count=1)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"not a task definition: {exc}") from None
    if root.tag != f"{{{NAMESPACE}}}Task":
        raise ValueError(f"not a task definition: the root element is {root.tag}")
    triggers = _find(root, "Triggers")
    kinds = () if triggers is None else tuple(child.tag.rpartition("}")[2] for child in triggers)
    return TaskFields(
        description=_text(root, "RegistrationInfo/Description", "") or "",
        trigger_kinds=kinds,
        logon_user_id=_text(root, "Triggers/LogonTrigger/UserId"),
        principal_user_id=_text(root, "Principals/Principal/UserId"),
        logon_type=_text(root, "Principals/Principal/LogonType"),
        run_level=_text(root, "Principals/Principal/RunLevel", "LeastPrivilege") or "",
        disallow_start_if_on_batteries=_flag(root, "Settings/DisallowStartIfOnBatteries", True),
        stop_if_going_on_batteries=_flag(root, "Settings/StopIfGoingOnBatteries", True),
        execution_time_limit=_text(root, "Settings/ExecutionTimeLimit", "PT72H") or "",
        multiple_instances_policy=_text(root, "Settings/MultipleInstancesPolicy", "IgnoreNew")
        or "",
        hidden=_flag(root, "Settings/Hidden", False),
        start_when_available=_flag(root, "Settings/StartWhenAvailable", False),
        allow_hard_terminate=_flag(root, "Settings/AllowHardTerminate", True),
        enabled=_flag(root, "Settings/Enabled", True),
        priority=int(_text(root, "Settings/Priority", "7") or "7"),
        restart_interval=_text(root, "Settings/RestartOnFailure/Interval"),
        restart_count=_optional_int(_text(root, "Settings/RestartOnFailure/Count")),
        command=_text(root, "Actions/Exec/Command", "") or "",
        arguments=_text(root, "Actions/Exec/Arguments", "") or "",
    )


def schtasks_exe(environ: Mapping[str, str]) -> str:
    """schtasks.exe by absolute path, so that no PATH entry can stand in for it."""
    return str(PureWindowsPath(_required(environ, "SystemRoot"), "System32", "schtasks.exe"))


def create_task_argv(environ: Mapping[str, str], xml_path: str) -> list[str]:
    """Create (or, with /F, replace) the task from its XML file."""
    return [schtasks_exe(environ), "/Create", "/TN", TASK_NAME, "/XML", xml_path, "/F"]


def run_task_argv(environ: Mapping[str, str]) -> list[str]:
    return [schtasks_exe(environ), "/Run", "/TN", TASK_NAME]


def end_task_argv(environ: Mapping[str, str]) -> list[str]:
    return [schtasks_exe(environ), "/End", "/TN", TASK_NAME]


def delete_task_argv(environ: Mapping[str, str]) -> list[str]:
    return [schtasks_exe(environ), "/Delete", "/TN", TASK_NAME, "/F"]


def query_task_xml_argv(environ: Mapping[str, str]) -> list[str]:
    """The task's definition as XML: the same in every Windows language."""
    return [schtasks_exe(environ), "/Query", "/TN", TASK_NAME, "/XML"]


def query_task_status_argv(environ: Mapping[str, str]) -> list[str]:
    return [schtasks_exe(environ), "/Query", "/TN", TASK_NAME, "/FO", "LIST", "/V"]


@dataclass(frozen=True)
class TaskStatus:
    """From `schtasks /Query /FO LIST /V`; None where the output did not say."""

    status: str | None
    last_result: int | None

    @property
    def running(self) -> bool | None:
        """Whether the task runs now; None when the output (translated) does not tell."""
        if self.status in _ENGLISH_STATUSES:
            return self.status == "Running"
        return None if self.last_result is None else self.last_result == TASK_RUNNING_RESULT


def parse_task_status(list_output: str) -> TaskStatus:
    """Status and last result of the first block of `/FO LIST /V` output.

    The labels are translated on Windows in other languages, where this finds nothing and
    says so (None); `query_task_xml_argv` is the language-independent check of the definition.
    """
    fields: dict[str, str] = {}
    for line in list_output.splitlines():
        label, colon, value = line.partition(":")
        label = label.strip()
        if label == "TaskName" and "TaskName" in fields:
            break  # the next block: another trigger of the same task
        if colon and label not in fields:
            fields[label] = value.strip()
    result = fields.get("Last Result", "")
    return TaskStatus(
        status=fields.get("Status") or None,
        last_result=int(result) if re.fullmatch(r"-?\d+", result) else None,
    )
