"""Installing the Windows half against the answers a Windows machine gives (schtasks, netsh)."""

from collections.abc import Sequence
from dataclasses import replace
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.install.plan import (
    RUN_AS_MODULE,
    CopyFile,
    RemoveDirectory,
    RemoveFile,
    RunCommand,
    WriteFile,
    render_dry_run,
)
from tailscale_wsl2.install.running import RunningCopy
from tailscale_wsl2.install.windows_side import (
    WindowsHost,
    firewall_rule_is_right,
    plan_install,
    plan_uninstall,
    read_windows_facts,
)
from tailscale_wsl2.install.windows_task import TaskDefinition, parse_task_xml, task_xml
from tailscale_wsl2.net.endpoints import Discovered
from tailscale_wsl2.plan.halves import Discoverers, Options
from tailscale_wsl2.system import CommandResult
from tailscale_wsl2.windows.firewall import RuleSpec
from tailscale_wsl2.windows.ipconfig import WslAdapter
from tests.support.netsh import rule_block

from . import samples

ENVIRON = {
    "SystemRoot": "C:\\WINDOWS",
    "USERDOMAIN": "DESKTOP-7Q2K4LM",
    "USERNAME": "alice",
    "LOCALAPPDATA": "C:\\Users\\alice\\AppData\\Local",
    "TEMP": "C:\\Users\\alice\\AppData\\Local\\Temp",
}
DOWNLOADED = "C:\\Users\\alice\\Downloads\\tailscale-wsl2.exe"
PROGRAMS = "C:\\Users\\alice\\AppData\\Local\\Programs\\tailscale-wsl2"
INSTALLED = PROGRAMS + "\\tailscale-wsl2w.exe"
LOGS = "C:\\Users\\alice\\AppData\\Local\\tailscale-wsl2\\logs"
SCHTASKS = "C:\\WINDOWS\\System32\\schtasks.exe"
NETSH = "C:\\WINDOWS\\System32\\netsh.exe"
# Installed with pipx: the venv's python.exe is a redirector that starts the base Python, which
# is the file the process runs as (running_image).
VENV_SCRIPTS = "C:\\Users\\alice\\pipx\\venvs\\tailscale-wsl2\\Scripts"
VENV_PYTHON = VENV_SCRIPTS + "\\python.exe"
VENV_PYTHONW = VENV_SCRIPTS + "\\pythonw.exe"
BASE = "C:\\Users\\alice\\AppData\\Local\\Programs\\Python\\Python312"
BASE_PYTHON = BASE + "\\python.exe"
BASE_PYTHONW = BASE + "\\pythonw.exe"
PIPX = frozenset({VENV_PYTHONW, BASE_PYTHONW})
SUBNET = IPv4Network("172.27.64.0/20")
ADAPTER = WslAdapter(Discovered("172.27.64.1", "vEthernet (WSL) adapter"), SUBNET)

# What Windows prints (English): no task, no rule.
NO_TASK = CommandResult(1, "ERROR: The system cannot find the file specified.\r\n")
NO_RULE = CommandResult(1, "\r\nNo rules match the specified criteria.\r\n")
# Wine's schtasks does not implement /Query: it exits 0 and prints nothing.
WINE_QUERY = CommandResult(0, "")
OUR_TASK = CommandResult(
    0, task_xml(TaskDefinition("DESKTOP-7Q2K4LM\\alice", INSTALLED, ("up", "--log-file", "x")))
)


def rule(program: str, remote_ip: str = "172.27.64.0/255.255.240.0") -> CommandResult:
    return CommandResult(0, "\r\n" + rule_block(Program=program, RemoteIP=remote_ip) + "Ok.\r\n")


class Machine:
    """Answers schtasks and netsh as a Windows machine does; records what was asked."""

    def __init__(self, task: CommandResult = NO_TASK, firewall: CommandResult = NO_RULE) -> None:
        self.task = task
        self.firewall = firewall
        self.asked: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str]) -> CommandResult | None:
        self.asked.append(tuple(argv))
        if argv[0].endswith("schtasks.exe") and "/Query" in argv:
            return self.task
        if argv[0] == "netsh" and "show" in argv:
            return self.firewall
        raise AssertionError(f"install only reads; it ran {argv}")


def never() -> Path:
    raise AssertionError("not looked up")


def host(
    machine: Machine,
    *,
    adapter: WslAdapter | None = ADAPTER,
    mode: str = "nat",
    running: RunningCopy | None = None,
    executable: str | None = DOWNLOADED,
    files: frozenset[str] = frozenset(),
) -> WindowsHost:
    return WindowsHost(
        environ=ENVIRON,
        run=machine.run,
        executable=executable,
        running=running,
        python=VENV_PYTHON,
        image=BASE_PYTHON,
        exists=files.__contains__,
        discoverers=Discoverers(
            windows_adapter=lambda: adapter,
            wsl_host_address=never,  # type: ignore[arg-type]
            windows_key_file=lambda: Path("C:/Users/alice/AppData/Local/tailscale-wsl2/link.key"),
            wsl_key_file=never,
            windows_networking_mode=lambda: (mode, ".wslconfig"),
        ),
    )


def test_a_first_install_copies_lets_the_installed_program_in_then_registers_and_starts() -> None:
    plan = plan_install(Options(), ("--max-connections", "64"), host(Machine()))
    assert plan.steps[0] == CopyFile(DOWNLOADED, INSTALLED, windowless=True)
    assert plan.steps[1] == RunCommand(
        (
            NETSH,
            "advfirewall",
            "firewall",
            "add",
            "rule",
            "name=tailscale-wsl2",
            "dir=in",
            "action=allow",
            "protocol=TCP",
            "localport=41113",
            "remoteip=172.27.64.0/20",
            "profile=any",
            "edge=no",
            "enable=yes",
            f"program={INSTALLED}",
        ),
        elevated=True,
    )
    # The firewall comes before the task can start, so Windows never asks on first listen.
    assert [type(step) for step in plan.steps[2:]] == [
        WriteFile,
        RunCommand,
        RemoveFile,
        RunCommand,
    ]
    assert plan.commands[-1] == (SCHTASKS, "/Run", "/TN", "tailscale-wsl2")
    fields = parse_task_xml(plan.files[0].data)
    assert fields.command == INSTALLED
    assert fields.arguments == f"up --max-connections 64 --log-file {LOGS}\\tailscale-wsl2.log"


def test_an_upgrade_with_the_rule_right_asks_for_no_elevation() -> None:
    machine = Machine(task=OUR_TASK, firewall=rule(INSTALLED))
    plan = plan_install(Options(), (), host(machine))
    assert not any(isinstance(step, RunCommand) and step.elevated for step in plan.steps)
    # End the old copy, replace it, start the new one.
    assert plan.steps[0] == RunCommand((SCHTASKS, "/End", "/TN", "tailscale-wsl2"), may_fail=True)
    assert plan.steps[1] == CopyFile(DOWNLOADED, INSTALLED, windowless=True)
    assert plan.commands[-1] == (SCHTASKS, "/Run", "/TN", "tailscale-wsl2")


def test_a_rule_firewall_add_made_for_the_downloaded_exe_is_moved_to_the_installed_one() -> None:
    plan = plan_install(Options(), (), host(Machine(firewall=rule(DOWNLOADED))))
    firewall = plan.steps[1]
    assert isinstance(firewall, RunCommand)
    assert firewall.elevated
    assert firewall.argv[:8] == (
        NETSH,
        "advfirewall",
        "firewall",
        "set",
        "rule",
        "name=tailscale-wsl2",
        "dir=in",
        "new",
    )
    assert f"program={INSTALLED}" in firewall.argv


def test_a_rule_for_an_old_subnet_is_updated() -> None:
    machine = Machine(firewall=rule(INSTALLED, remote_ip="172.22.16.0/255.255.240.0"))
    firewall = plan_install(Options(), (), host(machine)).steps[1]
    assert isinstance(firewall, RunCommand)
    assert "set" in firewall.argv
    assert "remoteip=172.27.64.0/20" in firewall.argv


@pytest.mark.parametrize(
    ("options", "mode"),
    [(Options(listen="127.0.0.1"), "nat"), (Options(), "mirrored")],
)
def test_loopback_needs_no_rule_and_netsh_is_not_asked(options: Options, mode: str) -> None:
    machine = Machine()
    # Mirrored networking makes no vEthernet (WSL) adapter.
    adapter = None if mode == "mirrored" else ADAPTER
    plan = plan_install(options, (), host(machine, mode=mode, adapter=adapter))
    assert not any(isinstance(step, RunCommand) and step.elevated for step in plan.steps)
    assert not any(argv[0] == "netsh" for argv in machine.asked)


def test_mirrored_fallen_back_to_nat_lets_the_adapters_subnet_in() -> None:
    """The half listens on the adapter as well when WSL fell back to NAT: the rule is needed."""
    plan = plan_install(Options(), (), host(Machine(), mode="mirrored"))
    elevated = [step for step in plan.steps if isinstance(step, RunCommand) and step.elevated]
    assert len(elevated) == 1
    assert "remoteip=172.27.64.0/20" in elevated[0].argv


def test_before_wsl_started_there_is_no_subnet_to_allow_and_it_says_so() -> None:
    with pytest.raises(ActionableError) as caught:
        plan_install(Options(), (), host(Machine(), adapter=None))
    assert str(caught.value) == (
        "no vEthernet (WSL) adapter: WSL has not started since Windows booted; start WSL "
        "(e.g. run `wsl true`), then run this again, or pass --listen ADDR"
    )


def test_a_copy_started_by_hand_is_named_with_how_to_stop_it() -> None:
    by_hand = RunningCopy(4242, DOWNLOADED, ("up",))
    with pytest.raises(ActionableError) as caught:
        plan_install(Options(), (), host(Machine(), running=by_hand))
    assert caught.value.what.startswith(
        "tailscale-wsl2 already runs here, started by hand (pid 4242"
    )
    assert caught.value.fix == (
        "stop it (Ctrl+C in its window, or `taskkill /PID 4242`), then run install again"
    )


def test_the_installed_copy_running_is_an_upgrade_not_a_conflict() -> None:
    task = RunningCopy(4242, INSTALLED.upper(), ("up",))  # paths compare without case
    assert plan_install(Options(), (), host(Machine(task=OUR_TASK), running=task)).steps


def test_wine_s_empty_answer_to_query_is_no_task() -> None:
    assert read_windows_facts(host(Machine(task=WINE_QUERY))).existing_task_xml is None
    assert read_windows_facts(host(Machine(task=OUR_TASK))).existing_task_xml == OUR_TASK.output


def test_uninstall_ends_deletes_the_task_the_rule_and_the_program_and_keeps_the_key() -> None:
    plan = plan_uninstall(host(Machine(task=OUR_TASK, firewall=rule(INSTALLED))))
    assert plan.steps == (
        RunCommand((SCHTASKS, "/End", "/TN", "tailscale-wsl2"), may_fail=True),
        RunCommand((SCHTASKS, "/Delete", "/TN", "tailscale-wsl2", "/F")),
        RunCommand(
            (NETSH, "advfirewall", "firewall", "delete", "rule", "name=tailscale-wsl2"),
            elevated=True,
        ),
        RemoveFile(INSTALLED),
        RemoveDirectory(PROGRAMS),
    )


def test_purge_removes_the_key_and_the_logs_too() -> None:
    plan = plan_uninstall(host(Machine()), purge=True)
    removed = [step.path for step in plan.steps if isinstance(step, RemoveFile | RemoveDirectory)]
    assert removed == [
        INSTALLED,
        PROGRAMS,
        "C:\\Users\\alice\\AppData\\Local\\tailscale-wsl2\\link.key",
        f"{LOGS}\\tailscale-wsl2.log",
        f"{LOGS}\\tailscale-wsl2.log.1",
        f"{LOGS}\\tailscale-wsl2.log.2",
        f"{LOGS}\\tailscale-wsl2.log.3",
        LOGS,
        "C:\\Users\\alice\\AppData\\Local\\tailscale-wsl2",
    ]
    assert not plan.commands  # no task, no rule: nothing to run


def test_a_task_made_by_hand_is_kept_and_the_fix_carries_purge() -> None:
    machine = Machine(task=CommandResult(0, samples.EXPORTED_BY_HAND))
    with pytest.raises(ActionableError) as caught:
        plan_uninstall(host(machine), purge=True)
    assert caught.value.fix == (
        "keep it, or delete it with `tailscale-wsl2.exe uninstall --purge --force`"
    )
    assert plan_uninstall(host(machine), purge=True, force=True).commands


def test_the_dry_run_shows_the_elevated_step() -> None:
    shown = render_dry_run(plan_install(Options(), (), host(Machine())))
    assert f"run elevated (one UAC prompt): {NETSH} advfirewall firewall add rule" in shown
    assert ", marked windowless (no console window)" in shown


def test_a_rule_is_right_only_when_it_lets_this_program_in_from_the_whole_subnet() -> None:
    spec = RuleSpec(41113, SUBNET, INSTALLED)
    assert firewall_rule_is_right(rule(INSTALLED).output, spec)
    assert firewall_rule_is_right(rule(INSTALLED.lower()).output, spec)
    assert not firewall_rule_is_right(rule(DOWNLOADED).output, spec)
    assert not firewall_rule_is_right(rule(INSTALLED, "172.27.64.0/255.255.255.0").output, spec)
    blocking = rule_block(Program=INSTALLED, Action="Block")
    assert not firewall_rule_is_right(blocking, spec)
    two = rule_block(Program=INSTALLED) + rule_block(Program=DOWNLOADED)
    assert not firewall_rule_is_right(two, spec)  # two rules of that name: made right as one


def test_a_pipx_install_runs_the_venv_s_pythonw_in_place_and_lets_the_base_one_in() -> None:
    """Nothing to copy: the task runs `pythonw.exe -m tailscale_wsl2 up` of pipx's venv (no
    window at logon), and the rule names the base Python's pythonw.exe, the process that
    listens behind the venv's redirector."""
    machine = Machine()
    plan = plan_install(Options(), ("--port", "5000"), host(machine, executable=None, files=PIPX))
    assert not any(isinstance(step, CopyFile) for step in plan.steps)
    firewall = plan.steps[0]
    assert isinstance(firewall, RunCommand)
    assert firewall.elevated
    assert firewall.argv[-1] == f"program={BASE_PYTHONW}"
    fields = parse_task_xml(plan.files[0].data)
    assert fields.command == VENV_PYTHONW
    assert fields.arguments == (
        f"-P -m tailscale_wsl2 up --port 5000 --log-file {LOGS}\\tailscale-wsl2.log"
    )
    assert plan.commands[-1] == (SCHTASKS, "/Run", "/TN", "tailscale-wsl2")
    # Upgrading (`pipx upgrade`, then install again): the task ends and starts again, and the
    # rule for the base pythonw.exe is right already: no elevation.
    again = Machine(task=OUR_TASK, firewall=rule(BASE_PYTHONW))
    upgrade = plan_install(Options(), (), host(again, executable=None, files=PIPX))
    assert not any(isinstance(step, RunCommand) and step.elevated for step in upgrade.steps)
    assert upgrade.steps[0] == RunCommand(
        (SCHTASKS, "/End", "/TN", "tailscale-wsl2"), may_fail=True
    )


def test_a_venv_without_a_pythonw_is_one_line_with_a_fix_that_works() -> None:
    with pytest.raises(ActionableError) as caught:
        plan_install(Options(), (), host(Machine(), executable=None, files=frozenset()))
    assert str(caught.value) == (
        "the logon task runs the Windows half with this Python's windowless interpreter, and "
        f"there is no {VENV_PYTHONW}; download the release's tailscale-wsl2.exe (README, "
        "Download) and run `tailscale-wsl2.exe install` with it"
    )


def test_pipx_s_task_running_is_an_upgrade_and_a_copy_started_by_hand_is_not() -> None:
    pipx = host(Machine(task=OUR_TASK), executable=None, files=PIPX, running=None)
    task = RunningCopy(4242, VENV_PYTHONW, (*RUN_AS_MODULE, "up"))
    assert plan_install(Options(), (), replace(pipx, running=task)).steps
    by_hand = RunningCopy(4243, VENV_PYTHON, (*RUN_AS_MODULE, "up"))
    with pytest.raises(ActionableError, match="started by hand"):
        plan_install(Options(), (), replace(pipx, running=by_hand))
