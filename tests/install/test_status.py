"""What status says is installed, read from the files install writes and the task's XML."""

from tailscale_wsl2.install.plan import WslFacts, WslProgram, plan_wsl_install
from tailscale_wsl2.install.status import Installation, windows_installation, wsl_installation
from tailscale_wsl2.install.systemd import UnitSpec, render_unit
from tailscale_wsl2.install.windows_task import TaskDefinition, task_xml, task_xml_bytes

from . import samples

UP = ("up", "--key-file", "/mnt/c/Users/alice/AppData/Local/tailscale-wsl2/link.key")
UNIT = render_unit(UnitSpec("/usr/local/bin/tailscale-wsl2", UP, 1000))
ENVIRON = {"LOCALAPPDATA": "C:\\Users\\alice\\AppData\\Local", "TEMP": "C:\\T"}
INSTALLED = "C:\\Users\\alice\\AppData\\Local\\Programs\\tailscale-wsl2\\tailscale-wsl2w.exe"


def test_a_unit_install_wrote() -> None:
    assert wsl_installation(UNIT, samples.UBUNTU_SHIPPED) == Installation(
        "the systemd service tailscale-wsl2.service",
        "/usr/local/bin/tailscale-wsl2 up --key-file "
        "/mnt/c/Users/alice/AppData/Local/tailscale-wsl2/link.key",
        "journalctl -u tailscale-wsl2.service",
    )


def test_an_edited_or_foreign_unit_is_installed_with_a_problem() -> None:
    edited = wsl_installation(UNIT.replace("RestartSec=5", "RestartSec=9"), None)
    assert edited.problem == "the unit was written by install, edited since"
    foreign = wsl_installation("[Service]\nExecStart=/opt/ts-relay up\n", None)
    assert (foreign.runs, foreign.problem) == (
        "/opt/ts-relay up",
        "the unit was not written by install",
    )


def test_the_boot_command_and_nothing() -> None:
    program = WslProgram(("/usr/local/bin/tailscale-wsl2",), frozen=True)
    facts = WslFacts(samples.DOCKER_WITH_COMMENT, None, False, False, None)
    conf = plan_wsl_install(program, UP, 1000, facts).files[0].text
    found = wsl_installation(None, conf)
    assert found.how == "the [boot] command in /etc/wsl.conf"
    assert found.runs is not None
    assert found.runs.startswith("TAILSCALE_WSL2_BOOT=1 SUDO_GID=1000 /usr/local/bin/tailscale-")
    assert found.runs.endswith("2>&1 &")  # ours only: Docker's part is not ours to show
    assert found.log == "/var/log/tailscale-wsl2.log"
    assert wsl_installation(None, samples.DOCKER_WITH_COMMENT) == Installation(None)
    assert wsl_installation(None, None) == Installation(None)


def test_the_logon_task_as_schtasks_prints_it_and_as_a_file() -> None:
    definition = TaskDefinition("PC\\alice", INSTALLED, ("up", "--log-file", "C:\\l.log"))
    for document in (task_xml(definition), task_xml_bytes(definition)):
        found = windows_installation(document, ENVIRON)
        assert found == Installation(
            "the logon task tailscale-wsl2",
            f"{INSTALLED} up --log-file C:\\l.log",
            "C:\\Users\\alice\\AppData\\Local\\tailscale-wsl2\\logs\\tailscale-wsl2.log",
        )
    assert windows_installation(None, ENVIRON) == Installation(None)


def test_a_task_made_by_hand_has_a_problem() -> None:
    found = windows_installation(samples.EXPORTED_BY_HAND, ENVIRON)
    assert found.problem == "the task was not written by install"
    assert windows_installation("<nonsense", ENVIRON).problem is not None
