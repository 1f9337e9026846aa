"""Editing /etc/wsl.conf: every byte of the user's file kept, WSL's own reading respected."""

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.install.wslconf import (
    BOOT_MARKER,
    BootPath,
    automount_root,
    boot_command_segment,
    choose_boot_path,
    effective_setting,
    find_windows_tools,
    has_our_boot_command,
    merge_boot_command,
    remove_boot_command,
)
from tests.support.ci import require

from . import samples

SEGMENT = boot_command_segment(
    "/usr/local/bin/tailscale-wsl2",
    ["up", "--log-file", "/var/log/tailscale-wsl2.log"],
    "/var/log/tailscale-wsl2.log",
)
NEWER_SEGMENT = boot_command_segment(
    "/usr/local/bin/tailscale-wsl2",
    ["up", "--port", "41114", "--log-file", "/var/log/tailscale-wsl2.log"],
    "/var/log/tailscale-wsl2.log",
)


def boot_command(text: str) -> str | None:
    """The [boot] command WSL would run, read the way WSL reads it."""
    return effective_setting(text, "boot.command")


def test_the_segment_is_marked_backgrounded_and_logged() -> None:
    expected = (
        f"{BOOT_MARKER} /usr/local/bin/tailscale-wsl2 up --log-file /var/log/tailscale-wsl2.log"
        " </dev/null >>/var/log/tailscale-wsl2.log 2>&1 &"
    )
    assert expected == SEGMENT


def test_the_segment_sets_the_programs_environment() -> None:
    segment = boot_command_segment("/p", ["up"], "/l", {"SUDO_GID": "1000", "X": "a b"})
    assert segment == f"{BOOT_MARKER} SUDO_GID=1000 X='a b' /p up </dev/null >>/l 2>&1 &"


def test_a_segment_the_file_cannot_carry_is_refused() -> None:
    with pytest.raises(ActionableError, match="cannot carry"):
        boot_command_segment("/opt/C#/tailscale-wsl2", ["up"], "/var/log/x.log")


def test_no_file_gets_a_boot_section() -> None:
    assert merge_boot_command(None, SEGMENT) == f"[boot]\ncommand={SEGMENT}\n"


def test_an_empty_file_gets_a_boot_section() -> None:
    assert merge_boot_command("", SEGMENT) == f"[boot]\ncommand={SEGMENT}\n"


def test_a_file_without_boot_keeps_every_line_and_gets_the_section_after_a_blank() -> None:
    merged = merge_boot_command("[user]\ndefault=alice\n", SEGMENT)
    assert merged == f"[user]\ndefault=alice\n\n[boot]\ncommand={SEGMENT}\n"


def test_a_file_without_a_final_newline_gets_one_before_the_new_section() -> None:
    merged = merge_boot_command("[user]\ndefault=alice", SEGMENT)
    assert merged == f"[user]\ndefault=alice\n\n[boot]\ncommand={SEGMENT}\n"
    assert remove_boot_command(merged) == "[user]\ndefault=alice\n"


def test_boot_with_other_keys_gets_the_command_after_its_last_key() -> None:
    text = "[boot]\nsystemd=false\nprotectBinfmt=true\n# my comment\n\n[user]\ndefault=dan\n"
    merged = merge_boot_command(text, SEGMENT)
    assert merged == (
        "[boot]\nsystemd=false\nprotectBinfmt=true\n"
        f"command={SEGMENT}\n"
        "# my comment\n\n[user]\ndefault=dan\n"
    )


def test_the_documented_example_keeps_every_line_and_the_docker_command() -> None:
    merged = merge_boot_command(samples.DOCUMENTED_EXAMPLE, SEGMENT)
    original_lines = samples.DOCUMENTED_EXAMPLE.splitlines()
    merged_lines = merged.splitlines()
    assert merged_lines[:-1] == original_lines[:-1]
    assert merged_lines[-1] == f"command = {SEGMENT} service docker start"
    assert boot_command(merged) == f"{SEGMENT} service docker start"


def test_someone_elses_command_keeps_its_spacing_and_comment() -> None:
    merged = merge_boot_command(samples.DOCKER_WITH_COMMENT, SEGMENT)
    assert merged == (
        f"[boot]\ncommand = {SEGMENT} service docker start   # start Docker\n[user]\ndefault=bob"
    )


def test_our_command_is_replaced_not_repeated() -> None:
    once = merge_boot_command(samples.DOCKER_WITH_COMMENT, SEGMENT)
    upgraded = merge_boot_command(once, NEWER_SEGMENT)
    assert upgraded == samples.DOCKER_WITH_COMMENT.replace(
        "command = service", f"command = {NEWER_SEGMENT} service"
    )
    assert merge_boot_command(upgraded, NEWER_SEGMENT) == upgraded


def test_an_empty_command_is_taken_over() -> None:
    assert merge_boot_command("[boot]\ncommand=\n", SEGMENT) == f"[boot]\ncommand={SEGMENT}\n"


def test_section_and_key_names_match_without_case() -> None:
    merged = merge_boot_command(samples.CAPITALISED, SEGMENT)
    assert merged == f"[Boot]\nSystemd=False\nCommand={SEGMENT} /usr/sbin/sshd\n"


def test_a_command_that_already_starts_tailscale_wsl2_is_left_to_its_owner() -> None:
    text = "[boot]\ncommand = /usr/local/bin/tailscale-wsl2 up &\n"
    with pytest.raises(ActionableError, match=r"line 2: .*already starts tailscale-wsl2") as caught:
        merge_boot_command(text, SEGMENT, forced="sudo tailscale-wsl2 install --port 5000 --force")
    assert caught.value.fix == (
        "remove that part with `sudoedit /etc/wsl.conf`, or run "
        "`sudo tailscale-wsl2 install --port 5000 --force`"
    )
    forced = merge_boot_command(text, SEGMENT, force=True)
    assert boot_command(forced) == f"{SEGMENT} /usr/local/bin/tailscale-wsl2 up &"


@pytest.mark.parametrize("name", sorted(samples.EDITABLE))
def test_crlf_and_lf_files_get_their_own_line_ending(name: str) -> None:
    text = samples.EDITABLE[name]
    merged = merge_boot_command(text, SEGMENT)
    if "\r\n" in text:
        assert merged.count("\n") == merged.count("\r\n")
    else:
        assert "\r" not in merged


@pytest.mark.parametrize("name", sorted(samples.EDITABLE))
def test_uninstall_gives_back_the_file_install_found(name: str) -> None:
    text = samples.EDITABLE[name]
    merged = merge_boot_command(text, SEGMENT)
    assert has_our_boot_command(merged)
    assert remove_boot_command(merged) == text


def test_uninstall_keeps_a_boot_section_holding_other_keys() -> None:
    merged = merge_boot_command(samples.UBUNTU_SHIPPED, SEGMENT)
    assert merged == f"[boot]\nsystemd=true\ncommand={SEGMENT}\n"
    assert remove_boot_command(merged) == samples.UBUNTU_SHIPPED


def test_uninstall_keeps_a_boot_section_holding_a_comment() -> None:
    text = f"[boot]\n# started at boot\ncommand={SEGMENT}\n"
    assert remove_boot_command(text) == "[boot]\n# started at boot\n"


def test_uninstall_removes_a_boot_section_it_emptied_between_others() -> None:
    text = f"[network]\ngenerateHosts=false\n\n[boot]\ncommand={SEGMENT}\n\n[user]\ndefault=eve\n"
    assert remove_boot_command(text) == "[network]\ngenerateHosts=false\n\n[user]\ndefault=eve\n"


def test_uninstall_changes_nothing_without_our_command() -> None:
    assert remove_boot_command(samples.DOCUMENTED_EXAMPLE) is None
    assert remove_boot_command(None) is None


def test_uninstall_gives_their_command_back_byte_for_byte() -> None:
    text = '[boot]\ncommand = "echo a#b"  \\\n  ; echo c   # theirs\n'
    merged = merge_boot_command(text, SEGMENT)
    # The continuation keeps the spaces on both sides of the line break, as WSL does.
    assert boot_command(merged) == f"{SEGMENT} echo a#b    ; echo c"
    assert remove_boot_command(merged) == text


@given(
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters='"\\#\r\n\x00'),
        min_size=1,
    ).filter(
        lambda command: (
            command.strip()
            and "tailscale-wsl2" not in command
            and not command.lstrip(" \t").startswith(BOOT_MARKER)
        )
    )
)
def test_any_command_of_theirs_comes_back(command: str) -> None:
    text = f"[boot]\ncommand={command}\n"
    merged = merge_boot_command(text, SEGMENT)
    theirs = command.strip(" \t")  # WSL drops the spaces around a value
    assert boot_command(merged) == f"{SEGMENT} {theirs}"
    assert remove_boot_command(merged) == text


def test_sh_runs_both_commands_and_ours_does_not_wait(tmp_path: Path) -> None:
    """The decided combination, run as WSL runs it: /bin/sh -c VALUE."""
    ours_ran, theirs_ran = tmp_path / "ours", tmp_path / "theirs"
    program = tmp_path / "fake-tailscale-wsl2"
    # Ours never ends by itself, like the relay: theirs must still run.
    program.write_text(f'#!/bin/sh\necho "$@" > {ours_ran}\nexec sleep 30\n')
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    segment = boot_command_segment(str(program), ["up", "a b"], str(tmp_path / "log"))
    merged = merge_boot_command(f"[boot]\ncommand = touch {theirs_ran}\n", segment)
    value = boot_command(merged)
    assert value is not None
    shell = subprocess.Popen(["/bin/sh", "-c", value], start_new_session=True)
    try:
        # sh returns after theirs although ours still runs: ours was not waited for.
        assert shell.wait(timeout=10) == 0
        assert theirs_ran.exists()
        deadline = time.monotonic() + 10
        while not (ours_ran.exists() and ours_ran.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ours_ran.read_text() == "up a b\n"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (samples.SEMICOLON_COMMENT, 3, "`;` does not start a comment"),
        ("command=x\n[boot]\n", 1, "outside any \\[section\\]"),
        ("[boot]\nsystemd=true\n[user]\n[boot]\n", 4, "\\[boot\\] again \\(first on line 1\\)"),
        ("[boot]\nsystemd=true\nSystemd=false\n", 3, "systemd= again in \\[boot\\]"),
        ('[automount]\noptions = "metadata\n', 2, 'a `"` is not closed'),
        ("[boot]\ncommand = echo a\\qb\n", 2, "not an escape WSL knows"),
        ("[auto_mount]\n", 1, "a section header is \\[name\\]"),
        ("[boot] x\n", 1, "only a # comment may follow"),
        ("[boot]\ngenerate_hosts=false\n", 2, "a setting is key=value"),
        ("[boot]\n  -x\n", 2, "expected a \\[section\\]"),
        ("[boot]\nsystemd=true\r[user]\n", 2, "carriage return"),
    ],
)
def test_a_file_wsl_cannot_read_is_refused_with_its_line(
    text: str, line: int, message: str
) -> None:
    with pytest.raises(ActionableError, match=rf"/etc/wsl.conf line {line}: .*{message}") as caught:
        merge_boot_command(text, SEGMENT)
    assert caught.value.fix


def test_a_byte_order_mark_is_refused_with_the_command_that_removes_it() -> None:
    with pytest.raises(ActionableError, match="byte-order mark") as caught:
        merge_boot_command("\ufeff[boot]\nsystemd=true\n", SEGMENT)
    assert "sed -i '1s/^\\xEF\\xBB\\xBF//' /etc/wsl.conf" in (caught.value.fix or "")


def test_the_fix_for_a_semicolon_comment_works_when_copied(tmp_path: Path) -> None:
    sed = shutil.which("sed")
    require(sed is not None, "no sed")
    with pytest.raises(ActionableError) as caught:
        merge_boot_command(samples.SEMICOLON_COMMENT, SEGMENT, path=str(tmp_path / "wsl.conf"))
    fix = caught.value.fix or ""
    command = fix[fix.index("`") + 1 : fix.rindex("`")].removeprefix("sudo ")
    (tmp_path / "wsl.conf").write_text(samples.SEMICOLON_COMMENT)
    subprocess.run(["/bin/sh", "-c", command], check=True)
    fixed = (tmp_path / "wsl.conf").read_text()
    assert fixed == samples.SEMICOLON_COMMENT.replace("; the", "# the")
    assert boot_command(merge_boot_command(fixed, SEGMENT)) == SEGMENT


def test_uninstall_refuses_a_file_made_unreadable_since() -> None:
    merged = merge_boot_command(samples.UBUNTU_SHIPPED, SEGMENT) + "; later\n"
    with pytest.raises(ActionableError, match="line 4"):
        remove_boot_command(merged)


@pytest.mark.parametrize(
    ("text", "systemd_running", "wsl1", "expected"),
    [
        (samples.UBUNTU_SHIPPED, False, False, BootPath.SYSTEMD),
        ("[boot]\nsystemd = TRUE\n", False, False, BootPath.SYSTEMD),
        ("[boot]\nsystemd=1\n", False, False, BootPath.SYSTEMD),
        (samples.SYSTEMD_OFF, False, False, BootPath.BOOT_COMMAND),
        ("[boot]\nsystemd=yes\n", False, False, BootPath.BOOT_COMMAND),  # not a WSL boolean
        (None, False, False, BootPath.BOOT_COMMAND),
        (None, True, False, BootPath.SYSTEMD),
        (samples.UBUNTU_SHIPPED, False, True, BootPath.BOOT_COMMAND),  # WSL 1 ignores it
        ("; note\n[boot]\nsystemd=true\n", False, False, BootPath.BOOT_COMMAND),  # unread
        ("[boot]\nsystemd=false\n[boot]\nsystemd=true\n", False, False, BootPath.BOOT_COMMAND),
    ],
)
def test_which_path_starts_the_wsl2_half(
    text: str | None, systemd_running: bool, wsl1: bool, expected: BootPath
) -> None:
    assert choose_boot_path(text, systemd_running=systemd_running, wsl1=wsl1) is expected


@pytest.mark.parametrize(
    ("text", "root"),
    [
        (None, "/mnt/"),
        (samples.DOCUMENTED_EXAMPLE, "/mnt/"),
        ("[automount]\nroot = /windir/\n", "/windir/"),
        ("[automount]\nroot=/windir\n", "/windir/"),
        ('[automount]\nroot = "/my drives/"  # quoted\n', "/my drives/"),
        ("[automount]\nroot = /\n", "/"),
        ("[automount]\nenabled=true\n;x\nroot=/elsewhere/\n", "/mnt/"),  # unread past line 3
    ],
)
def test_the_automount_root(text: str | None, root: str) -> None:
    assert automount_root(text) == root


def test_windows_tools_are_found_under_the_automount_root() -> None:
    present = {"/windir/c/Windows/System32/cmd.exe", "/usr/bin/wslpath", "/bin/wslpath"}
    tools = find_windows_tools("[automount]\nroot = /windir/\n", present.__contains__)
    assert tools.cmd_exe == "/windir/c/Windows/System32/cmd.exe"
    assert tools.wslpath == "/usr/bin/wslpath"


def test_windows_on_another_drive_and_wslpath_in_bin() -> None:
    present = {"/mnt/d/Windows/System32/cmd.exe", "/bin/wslpath"}
    tools = find_windows_tools(None, present.__contains__)
    assert (tools.cmd_exe, tools.wslpath) == ("/mnt/d/Windows/System32/cmd.exe", "/bin/wslpath")


def test_no_cmd_exe_says_where_it_looked() -> None:
    with pytest.raises(ActionableError, match="under /windir/"):
        find_windows_tools("[automount]\nroot=/windir\n", {"/usr/bin/wslpath"}.__contains__)


def test_no_wslpath_says_where_it_looked() -> None:
    with pytest.raises(ActionableError, match="/usr/bin/wslpath nor /bin/wslpath"):
        find_windows_tools(None, {"/mnt/c/Windows/System32/cmd.exe"}.__contains__)
