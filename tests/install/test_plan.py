"""Install plans for real-world systems, and what --dry-run prints of them."""

import shlex
from dataclasses import replace

import pytest

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.install.plan import (
    RUN_AS_MODULE,
    CopyFile,
    InstallPlan,
    RemoveDirectory,
    RemoveFile,
    RunCommand,
    WindowsFacts,
    WindowsProgram,
    WriteFile,
    WslFacts,
    WslProgram,
    plan_windows_install,
    plan_windows_uninstall,
    plan_wsl_install,
    plan_wsl_uninstall,
    render_dry_run,
)
from tailscale_wsl2.install.systemd import UnitSpec, render_unit
from tailscale_wsl2.install.windows_task import TaskDefinition, parse_task_xml, task_xml_bytes
from tailscale_wsl2.install.wslconf import BOOT_MARKER, effective_setting

from . import samples

SYSTEMCTL = "/usr/bin/systemctl"
UNIT = "/etc/systemd/system/tailscale-wsl2.service"
FROZEN = WslProgram(("/home/alice/Downloads/tailscale-wsl2",), frozen=True)
FROM_SOURCE = WslProgram(("/home/alice/src/.venv/bin/python", *RUN_AS_MODULE), False)
UP = ("up", "--key-file", "/mnt/c/Users/alice/AppData/Local/tailscale-wsl2/link.key")
SYSTEMD = WslFacts(
    wsl_conf_text=samples.UBUNTU_WITH_USER,
    unit_text=None,
    systemd_running=True,
    tailscaled_enabled=False,
    systemctl=SYSTEMCTL,
)
NO_SYSTEMD = WslFacts(
    wsl_conf_text=samples.NETWORK_FIX,
    unit_text=None,
    systemd_running=False,
    tailscaled_enabled=False,
    systemctl=None,
)
OUR_UNIT = render_unit(UnitSpec("/usr/local/bin/tailscale-wsl2", UP, 1000))


def test_with_systemd_the_binary_is_copied_and_the_service_enabled_and_restarted() -> None:
    plan = plan_wsl_install(FROZEN, UP, 1000, SYSTEMD)
    assert plan.steps == (
        CopyFile("/home/alice/Downloads/tailscale-wsl2", "/usr/local/bin/tailscale-wsl2", 0o755),
        WriteFile.utf8(UNIT, OUR_UNIT),
        RunCommand((SYSTEMCTL, "daemon-reload")),
        RunCommand((SYSTEMCTL, "enable", "tailscale-wsl2.service")),
        RunCommand((SYSTEMCTL, "restart", "tailscale-wsl2.service")),
    )
    assert plan.notes == ()


def test_a_binary_already_in_place_is_not_copied_onto_itself() -> None:
    plan = plan_wsl_install(WslProgram(("/usr/local/bin/tailscale-wsl2",), True), UP, 1000, SYSTEMD)
    assert not any(isinstance(step, CopyFile) for step in plan.steps)


def test_from_source_the_service_runs_the_interpreter() -> None:
    plan = plan_wsl_install(FROM_SOURCE, UP, None, SYSTEMD)
    assert not any(isinstance(step, CopyFile) for step in plan.steps)
    (unit,) = plan.files
    assert (
        "ExecStart=/home/alice/src/.venv/bin/python -P -m tailscale_wsl2 up --key-file" in unit.text
    )


def test_an_enabled_tailscaled_must_be_disabled_explicitly() -> None:
    facts = replace(SYSTEMD, tailscaled_enabled=True)
    with pytest.raises(ActionableError) as caught:
        plan_wsl_install(FROZEN, UP, 1000, facts)
    assert caught.value.fix == (
        "run `sudo tailscale-wsl2 install --disable-tailscaled` (it stops and disables it)"
    )
    plan = plan_wsl_install(FROZEN, UP, 1000, facts, disable_tailscaled=True)
    disable = RunCommand((SYSTEMCTL, "disable", "--now", "tailscaled.service"))
    assert plan.steps.index(disable) < plan.steps.index(plan.files[0])


def test_an_edited_unit_is_kept_unless_forced() -> None:
    facts = replace(SYSTEMD, unit_text=OUR_UNIT.replace("=5", "=9"))
    with pytest.raises(ActionableError, match="edited by hand"):
        plan_wsl_install(FROZEN, UP, 1000, facts)
    assert plan_wsl_install(FROZEN, UP, 1000, facts, force=True).files[0].text == OUR_UNIT


def test_an_older_unit_of_ours_is_replaced_without_force() -> None:
    older = render_unit(UnitSpec("/usr/local/bin/tailscale-wsl2", ("up",), None))
    facts = replace(SYSTEMD, unit_text=older)
    assert plan_wsl_install(FROZEN, UP, 1000, facts).files[0].text == OUR_UNIT


def test_systemd_switched_on_but_not_yet_running_enables_offline() -> None:
    facts = replace(SYSTEMD, systemd_running=False)
    plan = plan_wsl_install(FROZEN, UP, 1000, facts)
    assert plan.commands == [(SYSTEMCTL, "--root=/", "enable", "tailscale-wsl2.service")]
    assert "wsl --shutdown" in plan.notes[0]


def test_systemd_without_systemctl_is_a_fixable_error() -> None:
    facts = replace(SYSTEMD, systemctl=None)
    with pytest.raises(ActionableError, match="systemctl is in neither"):
        plan_wsl_install(FROZEN, UP, 1000, facts)


def test_moving_to_systemd_takes_our_boot_command_out() -> None:
    with_boot = plan_wsl_install(FROZEN, UP, 1000, NO_SYSTEMD).files[0].text
    facts = replace(SYSTEMD, wsl_conf_text=with_boot.replace("[boot]", "[boot]\nsystemd=true"))
    plan = plan_wsl_install(FROZEN, UP, 1000, facts)
    assert plan.steps[-1] == WriteFile.utf8(
        "/etc/wsl.conf", samples.NETWORK_FIX + "\n[boot]\nsystemd=true\n"
    )


def test_without_systemd_the_boot_command_starts_it_with_a_log_file() -> None:
    plan = plan_wsl_install(FROZEN, UP, 1000, NO_SYSTEMD)
    assert [type(step) for step in plan.steps] == [CopyFile, WriteFile]
    (conf,) = plan.files
    assert conf.path == "/etc/wsl.conf"
    assert conf.text.startswith(samples.NETWORK_FIX)
    command = effective_setting(conf.text, "boot.command")
    assert command is not None
    assert shlex.split(command.rstrip("&")) == [
        BOOT_MARKER,
        "SUDO_GID=1000",
        "/usr/local/bin/tailscale-wsl2",
        *UP,
        "--log-file",
        "/var/log/tailscale-wsl2.log",
        "</dev/null",
        ">>/var/log/tailscale-wsl2.log",
        "2>&1",
    ]
    assert "wsl --shutdown" in plan.notes[0]


def test_installing_twice_without_systemd_changes_nothing_the_second_time() -> None:
    first = plan_wsl_install(FROZEN, UP, 1000, NO_SYSTEMD)
    facts = replace(NO_SYSTEMD, wsl_conf_text=first.files[0].text)
    assert plan_wsl_install(FROZEN, UP, 1000, facts).files == []


def test_a_wsl_conf_wsl_cannot_read_stops_the_plan() -> None:
    facts = replace(NO_SYSTEMD, wsl_conf_text="; x\n[boot]\nsystemd=false\n")
    with pytest.raises(ActionableError, match="line 1"):
        plan_wsl_install(FROZEN, UP, 1000, facts)


def test_uninstall_with_systemd_stops_and_removes_our_unit() -> None:
    facts = replace(SYSTEMD, unit_text=OUR_UNIT)
    plan = plan_wsl_uninstall(FROZEN, facts)
    assert plan.steps == (
        RunCommand((SYSTEMCTL, "disable", "--now", "tailscale-wsl2.service")),
        RemoveFile(UNIT),
        RunCommand((SYSTEMCTL, "daemon-reload")),
        RemoveFile("/usr/local/bin/tailscale-wsl2"),
    )
    assert "systemctl enable --now tailscaled" in plan.notes[0]


def test_uninstall_keeps_a_unit_someone_edited() -> None:
    facts = replace(SYSTEMD, unit_text=OUR_UNIT + "Nice=1\n")
    with pytest.raises(ActionableError, match="uninstall --force"):
        plan_wsl_uninstall(FROZEN, facts)


def test_uninstall_without_systemd_gives_back_the_users_wsl_conf() -> None:
    installed = plan_wsl_install(FROZEN, UP, 1000, NO_SYSTEMD).files[0].text
    facts = replace(NO_SYSTEMD, wsl_conf_text=installed)
    plan = plan_wsl_uninstall(FROM_SOURCE, facts)
    assert plan.steps == (WriteFile.utf8("/etc/wsl.conf", samples.NETWORK_FIX),)


def test_uninstall_removes_a_wsl_conf_it_had_created() -> None:
    installed = plan_wsl_install(FROZEN, UP, 1000, WslFacts(None, None, False, False, None))
    facts = WslFacts(installed.files[0].text, None, False, False, None)
    assert plan_wsl_uninstall(FROZEN, facts).steps[0] == RemoveFile("/etc/wsl.conf")


ENVIRON = {
    "SYSTEMROOT": "C:\\WINDOWS",
    "USERDOMAIN": "DESKTOP-7Q2K4LM",
    "USERNAME": "alice",
    "LOCALAPPDATA": "C:\\Users\\alice\\AppData\\Local",
    "TEMP": "C:\\Users\\alice\\AppData\\Local\\Temp",
}
SCHTASKS = "C:\\WINDOWS\\System32\\schtasks.exe"
INSTALLED_DIR = "C:\\Users\\alice\\AppData\\Local\\Programs\\tailscale-wsl2"
INSTALLED_EXE = INSTALLED_DIR + "\\tailscale-wsl2w.exe"
TASK_FILE = "C:\\Users\\alice\\AppData\\Local\\Temp\\tailscale-wsl2-task.xml"
DOWNLOADED = "C:\\Users\\alice\\Downloads\\tailscale-wsl2.exe"


def test_windows_install_copies_registers_and_starts_the_task() -> None:
    plan = plan_windows_install(WindowsProgram(DOWNLOADED), WindowsFacts(ENVIRON, None))
    assert [type(step) for step in plan.steps] == [
        CopyFile,
        WriteFile,
        RunCommand,
        RemoveFile,
        RunCommand,
    ]
    assert plan.steps[0] == CopyFile(DOWNLOADED, INSTALLED_EXE, windowless=True)
    task_file = plan.files[0]
    assert task_file.path == TASK_FILE
    fields = parse_task_xml(task_file.data)
    assert (fields.command, fields.logon_user_id) == (INSTALLED_EXE, "DESKTOP-7Q2K4LM\\alice")
    assert fields.arguments == (
        "up --log-file C:\\Users\\alice\\AppData\\Local\\tailscale-wsl2\\logs\\tailscale-wsl2.log"
    )
    assert plan.commands == [
        (SCHTASKS, "/Create", "/TN", "tailscale-wsl2", "/XML", TASK_FILE, "/F"),
        (SCHTASKS, "/Run", "/TN", "tailscale-wsl2"),
    ]
    assert plan.steps[3] == RemoveFile(TASK_FILE)


def test_windows_reinstall_ends_the_running_copy_before_replacing_it() -> None:
    existing = task_xml_bytes(TaskDefinition("DESKTOP-7Q2K4LM\\alice", INSTALLED_EXE, ("up",)))
    plan = plan_windows_install(WindowsProgram(DOWNLOADED), WindowsFacts(ENVIRON, existing))
    assert plan.steps[0] == RunCommand((SCHTASKS, "/End", "/TN", "tailscale-wsl2"), may_fail=True)
    assert isinstance(plan.steps[1], CopyFile)


def test_a_task_install_did_not_make_is_kept_unless_forced() -> None:
    facts = WindowsFacts(ENVIRON, samples.EXPORTED_BY_HAND)
    with pytest.raises(ActionableError, match="did not create") as caught:
        plan_windows_install(WindowsProgram(DOWNLOADED), facts, up_options=("--port", "5000"))
    # The fix carries the user's options: copied, it installs what they asked for.
    assert caught.value.fix == (
        "keep it, or replace it with `tailscale-wsl2.exe install --port 5000 --force`"
    )
    assert plan_windows_install(WindowsProgram(DOWNLOADED), facts, force=True).commands
    with pytest.raises(ActionableError, match="uninstall --force"):
        plan_windows_uninstall(None, facts)


def test_running_the_installed_copy_again_copies_nothing() -> None:
    running = INSTALLED_EXE.upper()  # Windows paths compare without case
    plan = plan_windows_install(WindowsProgram(running), WindowsFacts(ENVIRON, None))
    assert not any(isinstance(step, CopyFile) for step in plan.steps)


def test_windows_install_from_a_venv_copies_nothing_and_runs_its_pythonw() -> None:
    pythonw = "C:\\Users\\alice\\pipx\\venvs\\tailscale-wsl2\\Scripts\\pythonw.exe"
    base = "C:\\Python312\\pythonw.exe"
    plan = plan_windows_install(WindowsProgram(pythonw, image=base), WindowsFacts(ENVIRON, None))
    assert [type(step) for step in plan.steps] == [WriteFile, RunCommand, RemoveFile, RunCommand]
    fields = parse_task_xml(plan.files[0].data)
    assert fields.command == pythonw
    assert fields.arguments.startswith("-P -m tailscale_wsl2 up --log-file C:\\Users\\alice\\")


def test_windows_uninstall_ends_and_deletes_the_task_then_the_program() -> None:
    installed = plan_windows_install(WindowsProgram(DOWNLOADED), WindowsFacts(ENVIRON, None))
    facts = WindowsFacts(ENVIRON, installed.files[0].data)
    plan = plan_windows_uninstall(DOWNLOADED, facts)
    assert plan.steps == (
        RunCommand((SCHTASKS, "/End", "/TN", "tailscale-wsl2"), may_fail=True),
        RunCommand((SCHTASKS, "/Delete", "/TN", "tailscale-wsl2", "/F")),
        RemoveFile(INSTALLED_EXE),
        RemoveDirectory(INSTALLED_DIR),
    )


def test_the_installed_copy_cannot_delete_itself_and_says_so() -> None:
    plan = plan_windows_uninstall(INSTALLED_EXE, WindowsFacts(ENVIRON, None))
    assert plan.steps == ()
    assert plan.notes == (f"delete {INSTALLED_EXE} once this program has exited",)


def test_the_dry_run_shows_whole_files_and_commands_as_typed() -> None:
    program = WslProgram(("/home/alice/My Apps/tailscale-wsl2",), True)
    plan = plan_wsl_install(program, UP, 1000, SYSTEMD)
    shown = render_dry_run(plan)
    assert "copy /home/alice/My Apps/tailscale-wsl2 to /usr/local/bin/tailscale-wsl2" in shown
    assert f"--- write {UNIT} (mode 0644) ---\n{OUR_UNIT}--- end of {UNIT} ---\n" in shown
    assert "run: /usr/bin/systemctl restart tailscale-wsl2.service\n" in shown
    plan = InstallPlan(
        (RunCommand(("/usr/bin/systemctl", "enable", "a b")), RemoveFile("/x")), ("later",)
    )
    assert render_dry_run(plan) == (
        "run: /usr/bin/systemctl enable 'a b'\nremove /x\nnote: later\n"
    )


def test_the_windows_dry_run_quotes_for_windows() -> None:
    environ = {**ENVIRON, "TEMP": "C:\\Users\\Alice Smith\\Temp"}
    shown = render_dry_run(
        plan_windows_install(WindowsProgram(DOWNLOADED), WindowsFacts(environ, None))
    )
    assert (
        "run: C:\\WINDOWS\\System32\\schtasks.exe /Create /TN tailscale-wsl2 /XML "
        '"C:\\Users\\Alice Smith\\Temp\\tailscale-wsl2-task.xml" /F\n'
    ) in shown
    assert "<Command>" + INSTALLED_EXE + "</Command>" in shown
    # Windows files have ACLs, not mode bits: none is shown.
    assert f"copy {DOWNLOADED} to {INSTALLED_EXE}, marked windowless" in shown
    assert "(mode " not in shown


def test_a_file_without_a_final_newline_is_shown_as_such() -> None:
    plan = InstallPlan((WriteFile.utf8("/etc/x", "a"),))
    assert render_dry_run(plan) == (
        "--- write /etc/x (mode 0644) ---\na\n(no newline)\n--- end of /etc/x ---\n"
    )
