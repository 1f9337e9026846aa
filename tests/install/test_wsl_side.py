"""Installing the WSL2 half against the answers a WSL distro gives (files, systemctl, interop)."""

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.install.plan import (
    RUN_AS_MODULE,
    CopyFile,
    RemoveFile,
    RunCommand,
    WriteFile,
    WslProgram,
)
from tailscale_wsl2.install.running import RunningCopy
from tailscale_wsl2.install.systemd import UnitSpec, render_unit
from tailscale_wsl2.install.wsl_side import (
    WslHost,
    WslRequest,
    check_windows_exe,
    plan_install,
    plan_uninstall,
    read_wsl_facts,
)
from tailscale_wsl2.install.wslconf import effective_setting
from tailscale_wsl2.system import CommandResult

from . import samples

DOWNLOADED = "/home/alice/Downloads/tailscale-wsl2"
KEY = "/mnt/c/Users/alice/AppData/Local/tailscale-wsl2/link.key"
UNIT = "/etc/systemd/system/tailscale-wsl2.service"
SYSTEMCTL = "/usr/bin/systemctl"
FROZEN = WslProgram((DOWNLOADED,), frozen=True)

# What systemctl prints on Ubuntu: tailscaled not installed, installed and enabled, running.
NO_TAILSCALED = CommandResult(
    1, "Failed to get unit file state for tailscaled.service: No such file or directory\n"
)
ENABLED = CommandResult(0, "enabled\n")
DISABLED = CommandResult(1, "disabled\n")
ACTIVE = CommandResult(0, "active\n")
INACTIVE = CommandResult(3, "inactive\n")


class Distro:
    """A WSL distro's files and answers; records what was run (install runs only reads)."""

    def __init__(
        self,
        files: dict[str, bytes] | None = None,
        *,
        systemd: bool = True,
        enabled: CommandResult = NO_TAILSCALED,
        active: CommandResult = INACTIVE,
        key_exists: bool = True,
    ) -> None:
        self.files = files if files is not None else {"/etc/wsl.conf": b"[boot]\nsystemd=true\n"}
        present = {SYSTEMCTL, "/mnt/c/Windows/System32/cmd.exe", "/usr/bin/wslpath"}
        present |= {"/run/systemd/system"} if systemd else set()
        present |= {KEY} if key_exists else set()
        self.present = present
        self.answers = {"is-enabled": enabled, "is-active": active}
        self.asked: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str]) -> CommandResult | None:
        self.asked.append(tuple(argv))
        if argv[0] == SYSTEMCTL:
            return self.answers[argv[1]]
        if argv[0] == "cmd.exe":  # system.run_command finds it under /mnt/c when under sudo
            return CommandResult(0, "C:\\Users\\alice\\AppData\\Local\r\n")
        if argv[0] == "wslpath":
            return CommandResult(0, "/mnt/c/Users/alice/AppData/Local\n")
        raise AssertionError(f"install only reads; it ran {argv}")


def host(distro: Distro, *, euid: int = 0, running: RunningCopy | None = None) -> WslHost:
    return WslHost(
        read_bytes=distro.files.get,
        exists=lambda path: path in distro.present or path in distro.files,
        run=distro.run,
        euid=euid,
        environ={"SUDO_GID": "1000", "SUDO_USER": "alice"},
        wsl1=False,
        program=FROZEN,
        running=running,
    )


INSTALL = WslRequest(command=("install",))


def test_with_systemd_the_unit_runs_up_with_the_key_resolved_now_and_the_users_group() -> None:
    request = replace(INSTALL, up_options=("--max-connections", "64"))
    plan = plan_install(request, host(Distro()))
    unit = render_unit(
        UnitSpec(
            "/usr/local/bin/tailscale-wsl2",
            ("up", "--max-connections", "64", "--key-file", KEY),
            1000,
        )
    )
    assert plan.steps == (
        CopyFile(DOWNLOADED, "/usr/local/bin/tailscale-wsl2"),
        WriteFile.utf8(UNIT, unit),
        RunCommand((SYSTEMCTL, "daemon-reload")),
        RunCommand((SYSTEMCTL, "enable", "tailscale-wsl2.service")),
        RunCommand((SYSTEMCTL, "restart", "tailscale-wsl2.service")),
    )
    assert plan.notes == ()


def test_without_root_one_line_gives_the_same_command_under_sudo() -> None:
    request = WslRequest(
        command=("install", "--socket-mode", "0666", "--windows-exe", "/mnt/c/x y/t.exe"),
        up_options=("--socket-mode", "0666"),
    )
    with pytest.raises(ActionableError) as caught:
        plan_install(request, host(Distro(), euid=1000))
    assert str(caught.value) == (
        "installing the WSL2 half needs root (it changes /etc); run `sudo "
        "/home/alice/Downloads/tailscale-wsl2 install --socket-mode 0666 --windows-exe "
        "'/mnt/c/x y/t.exe'`"
    )


def test_a_dry_run_needs_no_root() -> None:
    assert plan_install(replace(INSTALL, dry_run=True), host(Distro(), euid=1000)).steps


def test_a_key_the_windows_half_has_not_made_yet_is_a_note() -> None:
    plan = plan_install(INSTALL, host(Distro(key_exists=False)))
    assert plan.notes[0].startswith(f"no link key at {KEY} yet")


def test_a_given_key_file_is_not_looked_up_through_interop() -> None:
    distro = Distro()
    plan_install(
        replace(INSTALL, up_options=("--key-file", "/k"), key_file=Path("/k")), host(distro)
    )
    assert not any(argv[0] in ("cmd.exe", "wslpath") for argv in distro.asked)


@pytest.mark.parametrize(
    ("enabled", "active"), [(ENABLED, INACTIVE), (DISABLED, ACTIVE), (ENABLED, ACTIVE)]
)
def test_tailscaled_enabled_or_running_is_one_line_unless_disabled_with_consent(
    enabled: CommandResult, active: CommandResult
) -> None:
    distro = Distro(enabled=enabled, active=active)
    with pytest.raises(ActionableError) as caught:
        plan_install(INSTALL, host(distro))
    assert caught.value.what == (
        "tailscaled is enabled in this distro and would serve the socket the WSL2 half serves"
    )
    assert caught.value.fix == (
        "run `sudo /home/alice/Downloads/tailscale-wsl2 install --disable-tailscaled` "
        "(it stops and disables it)"
    )
    plan = plan_install(replace(INSTALL, disable_tailscaled=True), host(distro))
    assert RunCommand((SYSTEMCTL, "disable", "--now", "tailscaled.service")) in plan.steps


def test_a_unit_edited_by_hand_is_kept_with_one_line() -> None:
    ours = render_unit(UnitSpec("/usr/local/bin/tailscale-wsl2", ("up",), 1000))
    edited = ours.replace("RestartSec=5", "RestartSec=30").encode()
    request = WslRequest(command=("install", "--port", "5000"), up_options=("--port", "5000"))
    with pytest.raises(ActionableError) as caught:
        plan_install(request, host(Distro({UNIT: edited})))
    # The fix is the user's command with --force: their options carried, as they ran it.
    assert str(caught.value) == (
        f"{UNIT} was edited by hand since tailscale-wsl2 install wrote it; keep it, or replace "
        "it with `sudo /home/alice/Downloads/tailscale-wsl2 install --port 5000 --force`"
    )


def test_a_wsl_conf_wsl_cannot_read_is_refused_with_its_line() -> None:
    files = {"/etc/wsl.conf": samples.SEMICOLON_COMMENT.replace("systemd=true", "systemd=false")}
    distro = Distro({k: v.encode() for k, v in files.items()}, systemd=False)
    with pytest.raises(ActionableError) as caught:
        plan_install(INSTALL, host(distro))
    assert str(caught.value) == (
        "/etc/wsl.conf line 3: `;` does not start a comment in wsl.conf; WSL stops reading the "
        "file here; make it a # comment with `sudo sed -i '3s/;/#/' /etc/wsl.conf`"
    )


def test_no_systemd_and_no_wsl_conf_writes_one_with_the_boot_command_and_says_when() -> None:
    plan = plan_install(INSTALL, host(Distro({}, systemd=False)))
    [conf] = plan.files
    assert conf.path == "/etc/wsl.conf"
    command = effective_setting(conf.text, "boot.command") or ""
    assert command.startswith(
        "TAILSCALE_WSL2_BOOT=1 SUDO_GID=1000 /usr/local/bin/tailscale-wsl2 up"
    )
    assert f"--key-file {KEY}" in command
    assert plan.notes[-1].startswith("WSL reads /etc/wsl.conf when it starts: run `wsl --shutdown`")


def test_a_copy_started_by_hand_holding_the_socket_stops_a_systemd_install() -> None:
    by_hand = RunningCopy(777, DOWNLOADED, ("up",))
    with pytest.raises(ActionableError) as caught:
        plan_install(INSTALL, host(Distro(), running=by_hand))
    assert caught.value.fix == (
        "stop it (Ctrl+C in its terminal, or `sudo kill 777`), then run install again"
    )


def test_the_installed_service_running_is_an_upgrade() -> None:
    service = RunningCopy(777, "/usr/local/bin/tailscale-wsl2", ("up",))
    plan = plan_install(INSTALL, host(Distro(), running=service))
    assert RunCommand((SYSTEMCTL, "restart", "tailscale-wsl2.service")) in plan.steps


def test_with_the_boot_command_a_running_copy_is_only_a_note() -> None:
    by_hand = RunningCopy(777, DOWNLOADED, ("up",))
    plan = plan_install(INSTALL, host(Distro({}, systemd=False), running=by_hand))
    assert any("runs now (pid 777)" in note for note in plan.notes)


def test_windows_exe_installs_the_windows_half_first() -> None:
    exe = ("/mnt/c/Users/alice/Downloads/tailscale-wsl2.exe", "install", "--port", "5000")
    plan = plan_install(replace(INSTALL, windows_command=exe), host(Distro()))
    assert plan.steps[0] == RunCommand(exe)


@pytest.mark.parametrize("key", ["/home/alice/link.key", "/mnt/wsl/link.key"])
def test_windows_exe_refuses_a_key_file_the_windows_half_could_not_read_at_logon(
    key: str,
) -> None:
    exe = ("/mnt/c/Users/alice/Downloads/tailscale-wsl2.exe", "install")
    request = replace(INSTALL, windows_command=exe, key_file=Path(key))
    with pytest.raises(ActionableError) as caught:
        plan_install(request, host(Distro()))
    assert caught.value.what == (
        f"--key-file {key} is not on a Windows drive: the Windows half starts at logon, "
        "before WSL, and could not read it"
    )
    # Without --windows-exe the WSL2 half alone is installed: any key file of its own is fine.
    assert plan_install(replace(request, windows_command=None), host(Distro())).steps


def test_windows_exe_takes_a_key_file_on_a_windows_drive() -> None:
    exe = ("/mnt/c/Users/alice/Downloads/tailscale-wsl2.exe", "install")
    key = Path("/mnt/d/keys/link.key")
    plan = plan_install(replace(INSTALL, windows_command=exe, key_file=key), host(Distro()))
    assert plan.steps[0] == RunCommand(exe)


def test_windows_exe_must_be_an_exe_that_exists() -> None:
    check_windows_exe("/mnt/c/t.exe", {"/mnt/c/t.exe"}.__contains__)
    for path in ("/mnt/c/t.exe", "/home/alice/tailscale-wsl2"):
        with pytest.raises(ActionableError, match=r"no such \.exe"):
            check_windows_exe(path, {"/home/alice/tailscale-wsl2"}.__contains__)


def test_the_facts_come_from_the_distro() -> None:
    distro = Distro({"/etc/wsl.conf": b"[boot]\nsystemd=true\n\xff\n"}, enabled=ENABLED)
    facts = read_wsl_facts(host(distro))
    # Bytes that are not UTF-8 survive the round trip.
    assert facts.wsl_conf_text is not None
    assert facts.wsl_conf_text.encode("utf-8", "surrogateescape").endswith(b"\xff\n")
    assert (facts.systemd_running, facts.tailscaled_enabled, facts.systemctl) == (
        True,
        True,
        SYSTEMCTL,
    )


def test_uninstall_with_purge_removes_the_boot_log_and_then_the_windows_half() -> None:
    ours = render_unit(UnitSpec("/usr/local/bin/tailscale-wsl2", ("up",), 1000)).encode()
    exe = ("/mnt/c/t.exe", "uninstall", "--purge")
    request = WslRequest(command=("uninstall", "--purge"), purge=True, windows_command=exe)
    files = {UNIT: ours, "/usr/local/bin/tailscale-wsl2": b"\x7fELF"}
    files |= {f"/var/log/tailscale-wsl2.log{suffix}": b"..." for suffix in ("", ".1", ".2", ".3")}
    plan = plan_uninstall(request, host(Distro(files)))
    assert plan.steps[0] == RunCommand((SYSTEMCTL, "disable", "--now", "tailscale-wsl2.service"))
    assert plan.steps[-6:] == (
        RemoveFile("/usr/local/bin/tailscale-wsl2"),
        RemoveFile("/var/log/tailscale-wsl2.log"),
        RemoveFile("/var/log/tailscale-wsl2.log.1"),
        RemoveFile("/var/log/tailscale-wsl2.log.2"),
        RemoveFile("/var/log/tailscale-wsl2.log.3"),
        RunCommand(exe),
    )


def test_uninstall_of_nothing_says_so() -> None:
    program = WslProgram(("/usr/bin/python3", *RUN_AS_MODULE), frozen=False)
    distro = Distro({})
    plan = plan_uninstall(
        WslRequest(command=("uninstall",)), replace(host(distro), program=program)
    )
    assert plan.steps == ()
    assert plan.notes == ("nothing of tailscale-wsl2 is installed here",)


def test_uninstall_shows_only_what_is_there_to_remove() -> None:
    request = WslRequest(command=("uninstall", "--purge"), purge=True)
    plan = plan_uninstall(request, host(Distro({"/var/log/tailscale-wsl2.log": b"x"})))
    assert plan.steps == (RemoveFile("/var/log/tailscale-wsl2.log"),)
