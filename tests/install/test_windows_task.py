"""The logon task: its XML field by field, the file schtasks reads, and schtasks' command lines."""

import subprocess
import xml.etree.ElementTree as ET

import pytest

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.install.windows_task import (
    NAMESPACE,
    TASK_NAME,
    TaskDefinition,
    create_task_argv,
    delete_task_argv,
    end_task_argv,
    parse_task_status,
    parse_task_xml,
    query_task_status_argv,
    query_task_xml_argv,
    run_task_argv,
    schtasks_exe,
    task_xml,
    task_xml_bytes,
    windows_command_line,
    windows_user_id,
)

from . import samples

# As os.environ holds them on Windows: names in upper case.
ENVIRON = {
    "SYSTEMROOT": "C:\\WINDOWS",
    "USERDOMAIN": "DESKTOP-7Q2K4LM",
    "USERNAME": "alice",
    "LOCALAPPDATA": "C:\\Users\\alice\\AppData\\Local",
}
EXE = "C:\\Users\\alice\\AppData\\Local\\Programs\\tailscale-wsl2\\tailscale-wsl2.exe"
LOG = "C:\\Users\\alice\\AppData\\Local\\tailscale-wsl2\\logs\\tailscale-wsl2.log"
DEFINITION = TaskDefinition("DESKTOP-7Q2K4LM\\alice", EXE, ("up", "--log-file", LOG))


def test_our_task_reads_back_field_by_field() -> None:
    fields = parse_task_xml(task_xml(DEFINITION))
    assert fields.written_by_install
    assert fields.trigger_kinds == ("LogonTrigger",)
    assert fields.logon_user_id == "DESKTOP-7Q2K4LM\\alice"
    assert fields.principal_user_id == "DESKTOP-7Q2K4LM\\alice"
    assert fields.logon_type == "InteractiveToken"
    assert fields.run_level == "LeastPrivilege"
    assert fields.disallow_start_if_on_batteries is False
    assert fields.stop_if_going_on_batteries is False
    assert fields.execution_time_limit == "PT0S"
    assert fields.multiple_instances_policy == "IgnoreNew"
    assert fields.hidden is True
    assert fields.start_when_available is True
    assert fields.allow_hard_terminate is True
    assert fields.enabled is True
    assert fields.priority == 4
    assert (fields.restart_interval, fields.restart_count) == ("PT1M", 255)
    assert fields.command == EXE
    assert fields.arguments == f"up --log-file {LOG}"


def test_the_document_is_a_version_1_2_task_in_the_task_namespace() -> None:
    text = task_xml(DEFINITION)
    assert text.startswith('<?xml version="1.0" encoding="UTF-16"?>\n<Task version="1.2" ')
    root = ET.fromstring(text)
    assert root.tag == f"{{{NAMESPACE}}}Task"
    assert root.get("version") == "1.2"
    assert "ns0:" not in text
    assert f'xmlns="{NAMESPACE}"' in text
    # Both halves of RestartOnFailure, within the schema's bounds (1 minute, unsignedByte).
    count = root.find(f"{{{NAMESPACE}}}Settings/{{{NAMESPACE}}}RestartOnFailure")
    assert count is not None
    assert [child.tag.rpartition("}")[2] for child in count] == ["Interval", "Count"]


def test_the_file_for_schtasks_is_utf16_little_endian_with_a_bom() -> None:
    data = task_xml_bytes(DEFINITION)
    assert data[:2] == b"\xff\xfe"
    text = data[2:].decode("utf-16-le")
    assert text.startswith('<?xml version="1.0" encoding="UTF-16"?>\r\n')
    assert text.count("\n") == text.count("\r\n")
    assert parse_task_xml(data).command == EXE
    # An XML parser reading the bytes alone agrees with the declaration.
    assert ET.fromstring(data).get("version") == "1.2"


def test_characters_xml_reserves_are_escaped_and_come_back() -> None:
    odd = TaskDefinition(
        "CORP\\o'brien & co", "C:\\Users\\A&B <x>\\tailscale-wsl2.exe", ("up", 'say "hi"', "")
    )
    text = task_xml(odd)
    assert "A&amp;B &lt;x&gt;" in text
    fields = parse_task_xml(text)
    assert fields.command == "C:\\Users\\A&B <x>\\tailscale-wsl2.exe"
    assert fields.logon_user_id == "CORP\\o'brien & co"
    assert fields.arguments == 'up "say \\"hi\\"" ""'


def test_arguments_are_quoted_for_a_windows_programs_c_runtime() -> None:
    assert windows_command_line(["up", "--log-file", "C:\\Users\\Alice Smith\\logs\\x.log"]) == (
        'up --log-file "C:\\Users\\Alice Smith\\logs\\x.log"'
    )
    assert windows_command_line(["a\\", "b c\\"]) == 'a\\ "b c\\\\"'


def test_a_percent_sign_is_refused_because_task_scheduler_expands_it() -> None:
    with pytest.raises(ActionableError, match="expands"):
        windows_command_line(["up", "--log-file", "C:\\100%\\x.log"])
    with pytest.raises(ActionableError, match="expands"):
        task_xml(TaskDefinition("D\\u", "C:\\%TEMP%\\tailscale-wsl2.exe", ()))


def test_a_task_made_by_hand_reads_with_the_schema_defaults() -> None:
    fields = parse_task_xml(samples.EXPORTED_BY_HAND)
    assert not fields.written_by_install
    assert fields.trigger_kinds == ("LogonTrigger",)
    assert fields.principal_user_id == "S-1-5-21-3623811015-3361044348-30300820-1001"
    # Left out, so the schema's defaults: the ones install must not leave to chance.
    assert fields.disallow_start_if_on_batteries is True
    assert fields.stop_if_going_on_batteries is True
    assert fields.execution_time_limit == "PT72H"
    assert fields.hidden is False
    assert fields.priority == 7
    assert (fields.restart_interval, fields.restart_count) == (None, None)
    assert fields.run_level == "LeastPrivilege"
    assert fields.command == '"C:\\Users\\alice\\bin\\tailscale-wsl2.exe"'


def test_the_exported_file_as_bytes_reads_the_same() -> None:
    data = b"\xff\xfe" + samples.EXPORTED_BY_HAND.replace("\n", "\r\n").encode("utf-16-le")
    assert parse_task_xml(data) == parse_task_xml(samples.EXPORTED_BY_HAND)


@pytest.mark.parametrize(
    "document", ["", "<Task/>", "<?xml version='1.0'?><Task xmlns='urn:other'/>", "not xml"]
)
def test_what_is_not_a_task_definition_is_said_to_be(document: str) -> None:
    with pytest.raises(ValueError, match="not a task definition"):
        parse_task_xml(document)


def test_the_user_the_task_is_for() -> None:
    assert windows_user_id({"userdomain": "CORP", "UserName": "bob"}) == "CORP\\bob"
    with pytest.raises(ActionableError, match="%USERNAME% is not set"):
        windows_user_id({"USERDOMAIN": "CORP"})


def test_schtasks_is_run_by_its_absolute_path() -> None:
    assert schtasks_exe(ENVIRON) == "C:\\WINDOWS\\System32\\schtasks.exe"
    assert schtasks_exe({"SystemRoot": "D:\\Win"}) == "D:\\Win\\System32\\schtasks.exe"
    with pytest.raises(ActionableError, match="%SystemRoot% is not set"):
        schtasks_exe({})


def test_the_schtasks_command_lines() -> None:
    exe = "C:\\WINDOWS\\System32\\schtasks.exe"
    xml_file = "C:\\Users\\alice\\AppData\\Local\\Temp\\tailscale-wsl2-task.xml"
    assert create_task_argv(ENVIRON, xml_file) == [
        exe, "/Create", "/TN", TASK_NAME, "/XML", xml_file, "/F"
    ]  # fmt: skip
    assert run_task_argv(ENVIRON) == [exe, "/Run", "/TN", TASK_NAME]
    assert end_task_argv(ENVIRON) == [exe, "/End", "/TN", TASK_NAME]
    assert delete_task_argv(ENVIRON) == [exe, "/Delete", "/TN", TASK_NAME, "/F"]
    assert query_task_xml_argv(ENVIRON) == [exe, "/Query", "/TN", TASK_NAME, "/XML"]
    assert query_task_status_argv(ENVIRON) == [
        exe, "/Query", "/TN", TASK_NAME, "/FO", "LIST", "/V"
    ]  # fmt: skip
    # As one Windows command line, the file name with a space stays one argument.
    line = subprocess.list2cmdline(create_task_argv(ENVIRON, "C:\\Temp Dir\\t.xml"))
    assert '/XML "C:\\Temp Dir\\t.xml" /F' in line


def test_the_status_of_a_task_waiting_for_logon() -> None:
    status = parse_task_status(samples.SCHTASKS_LIST_READY)
    assert (status.status, status.last_result, status.running) == ("Ready", 267011, False)


def test_the_status_of_a_running_task() -> None:
    status = parse_task_status(samples.SCHTASKS_LIST_RUNNING)
    assert (status.status, status.last_result, status.running) == ("Running", 267009, True)


def test_only_the_first_block_counts() -> None:
    second = samples.SCHTASKS_LIST_RUNNING.replace("\\tailscale-wsl2", "\\other")
    status = parse_task_status(samples.SCHTASKS_LIST_READY + second)
    assert status.status == "Ready"


def test_translated_output_says_it_does_not_know() -> None:
    status = parse_task_status(samples.SCHTASKS_LIST_GERMAN)
    # "Status" is spelt the same in German, so its translated value is found; the last
    # result's label is translated too, so nothing tells whether it runs.
    assert status.status == "Wird ausgeführt"
    assert status.last_result is None
    assert status.running is None


def test_an_unknown_status_falls_back_to_the_last_result() -> None:
    text = samples.SCHTASKS_LIST_RUNNING.replace(
        "Status:                               Running",
        "Status:                               En cours",
    )
    assert parse_task_status(text).running is True
