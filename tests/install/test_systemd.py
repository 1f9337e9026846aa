"""The WSL2 half's unit: its settings, ExecStart quoting as systemd itself reads it, ownership."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.install.plan import (
    RUN_AS_MODULE,
    WriteFile,
    WslFacts,
    WslProgram,
    plan_wsl_install,
)
from tailscale_wsl2.install.systemd import (
    UNIT_NAME,
    UnitSpec,
    UnitState,
    check_may_overwrite,
    check_may_remove,
    classify_unit,
    exec_start_value,
    quote_exec_argument,
    quote_exec_program,
    render_unit,
)
from tailscale_wsl2.system import find_first
from tests.support.ci import require

SPEC = UnitSpec(
    "/usr/local/bin/tailscale-wsl2",
    ("up", "--key-file", "/mnt/c/Users/Alice Smith/AppData/Local/tailscale-wsl2/link.key"),
    1000,
)
# Every character ExecStart= treats specially, and some it does not.
AWKWARD_ARGUMENTS = (
    "up",
    "two words",
    "100%",
    "%h",
    "$HOME",
    "${HOME}",
    '"quoted"',
    "it's",
    "back\\slash",
    "trailing\\",
    ";",
    "\\;",
    "",
    "new\nline",
    "tab\there",
    "é",
    "\x01",
    "--flag=a b",
)


@pytest.mark.parametrize(
    ("argument", "word"),
    [
        ("up", "up"),
        ("--port=41113", "--port=41113"),
        ("/mnt/c/Users/alice/link.key", "/mnt/c/Users/alice/link.key"),
        ("two words", '"two words"'),
        ("100%", "100%%"),
        ("%h", "%%h"),
        ("$HOME", "$$HOME"),
        ("a$b c", '"a$$b c"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        (";", '";"'),
        ("", '""'),
        ("new\nline", '"new\\nline"'),
        ("tab\there", '"tab\\there"'),
        ("\x7f", '"\\x7f"'),
    ],
)
def test_an_argument_becomes_one_systemd_word(argument: str, word: str) -> None:
    assert quote_exec_argument(argument) == word


def test_nul_cannot_be_an_argument() -> None:
    with pytest.raises(ValueError, match="NUL"):
        quote_exec_argument("a\0b")


def test_the_program_is_absolute_and_escaped_for_specifiers_only() -> None:
    assert quote_exec_program("/opt/tail scale/100%/tailscale-wsl2") == (
        '"/opt/tail scale/100%%/tailscale-wsl2"'
    )
    with pytest.raises(ValueError, match="absolute"):
        quote_exec_program("tailscale-wsl2")


@pytest.mark.parametrize("path", ["/opt/$x/tailscale-wsl2", '/opt/a"b/t', "/opt/a\\b/t"])
def test_a_program_path_systemd_cannot_run_is_refused(path: str) -> None:
    with pytest.raises(ActionableError, match="cannot carry"):
        quote_exec_program(path)


def _sections(unit: str) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in unit.splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections[current] = []
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            sections[current].append((key, value))
    return sections


def test_the_unit_has_every_setting_the_service_needs() -> None:
    sections = _sections(render_unit(SPEC))
    assert set(sections) == {"Unit", "Service", "Install"}
    unit, service, install = (dict(sections[name]) for name in ("Unit", "Service", "Install"))
    assert unit["After"] == "network-online.target"
    assert unit["Wants"] == "network-online.target"
    assert unit["Conflicts"] == "tailscaled.service"
    assert unit["StartLimitIntervalSec"] == "0"
    assert service["Type"] == "simple"
    assert service["Restart"] == "on-failure"
    assert 0 < int(service["RestartSec"]) <= 10
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > 2  # the relay's own shutdown takes 2 s
    assert service["StandardOutput"] == service["StandardError"] == "journal"
    assert service["ExecStart"] == (
        "/usr/local/bin/tailscale-wsl2 up --key-file"
        ' "/mnt/c/Users/Alice Smith/AppData/Local/tailscale-wsl2/link.key"'
    )
    environment = [value for key, value in sections["Service"] if key == "Environment"]
    assert environment == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "SUDO_GID=1000",
    ]
    assert install == {"WantedBy": "multi-user.target"}


def test_no_socket_group_sets_no_sudo_gid() -> None:
    unit = render_unit(UnitSpec(SPEC.program, SPEC.arguments, None))
    assert "SUDO_GID" not in unit
    assert "/mnt/" not in unit.split("ExecStart=")[0]  # no Windows folder anywhere but the key


def _unquote_dump(command_line: str) -> list[str]:
    """Words of systemd's own dump of a command line (shell-like, C escapes in quotes)."""
    words: list[str] = []
    for match in re.finditer(r'"((?:[^"\\]|\\.)*)"|(\S+)', command_line):
        quoted, bare = match.groups()
        if bare is not None:
            words.append(bare)
            continue

        def unescape(escape: re.Match[str]) -> str:
            text = escape.group(1)
            if text[0] in "01234567":
                return chr(int(text, 8))
            return {"n": "\n", "t": "\t", "r": "\r"}.get(text, text)

        words.append(re.sub(r"\\([0-7]{3}|.)", unescape, quoted))
    return words


# By absolute path, as every system tool: /usr/bin on distros that merged /usr, else /bin.
SYSTEMD_ANALYZE_CANDIDATES = ("/usr/bin/systemd-analyze", "/bin/systemd-analyze")


@pytest.fixture
def systemd_analyze() -> str:
    path = find_first(SYSTEMD_ANALYZE_CANDIDATES, os.path.exists)
    # Never a skip in CI (require fails there): make test installs the systemd package.
    require(path is not None, "systemd-analyze is not installed (apt-get install systemd)")
    assert path is not None
    return path


def _verify(systemd_analyze: str, unit_dir: Path, unit: str) -> "subprocess.CompletedProcess[str]":
    """`systemd-analyze verify` of `unit`, at debug level so that it dumps what it parsed."""
    unit_path = unit_dir / UNIT_NAME
    unit_path.write_text(unit)
    return subprocess.run(
        [systemd_analyze, "verify", "--man=no", str(unit_path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "debug"},
    )


def test_systemd_accepts_the_unit_and_reads_every_argument_back(
    systemd_analyze: str, tmp_path: Path
) -> None:
    program = tmp_path / "bin dir 100%" / "tailscale-wsl2"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    unit = render_unit(UnitSpec(str(program), AWKWARD_ARGUMENTS, 1000))
    verified = _verify(systemd_analyze, tmp_path, unit)
    assert verified.returncode == 0, verified.stderr
    # At debug level, verify dumps the unit as systemd parsed it (and warns on stderr about
    # anything it ignored, such as an unknown key or escape).
    assert not re.search(r"(?m)^.*tailscale-wsl2\.service:\d+:", verified.stderr), verified.stderr
    dumped = re.search(r"(?m)^\s*Command Line: (.*)$", verified.stdout)
    assert dumped is not None, verified.stdout
    # `$$` becomes `$` only when the service starts: the parsed words still hold `$$`.
    expected = [str(program), *(argument.replace("$", "$$") for argument in AWKWARD_ARGUMENTS)]
    assert _unquote_dump(dumped.group(1)) == expected


def test_the_unit_install_writes_passes_systemd_analyze_verify(
    systemd_analyze: str, tmp_path: Path
) -> None:
    """The unit as the install plan writes it (here for the program run from source, whose
    interpreter exists on this machine, as verify requires of ExecStart's program)."""
    program = WslProgram((sys.executable, *RUN_AS_MODULE), frozen=False)
    facts = WslFacts(None, None, systemd_running=True, tailscaled_enabled=False, systemctl="/x")
    up = ("up", "--port", "5000", *SPEC.arguments[1:], "--socket-mode", "0600")
    plan = plan_wsl_install(program, up, 1000, facts)
    (unit,) = [step for step in plan.steps if isinstance(step, WriteFile)]
    verified = _verify(systemd_analyze, tmp_path, unit.text)
    assert verified.returncode == 0, verified.stderr
    assert not re.search(r"(?m)^.*tailscale-wsl2\.service:\d+:", verified.stderr), verified.stderr
    dumped = re.search(r"(?m)^\s*Command Line: (.*)$", verified.stdout)
    assert dumped is not None, verified.stdout
    assert _unquote_dump(dumped.group(1)) == [sys.executable, *RUN_AS_MODULE, *up]


def test_systemd_refuses_what_the_quoting_protects_against(
    systemd_analyze: str, tmp_path: Path
) -> None:
    """The check above can fail: systemd refuses an unescaped specifier such as %Z."""
    unit = render_unit(SPEC).replace(
        exec_start_value(SPEC.program, SPEC.arguments), "/bin/true up %Z"
    )
    verified = _verify(systemd_analyze, tmp_path, unit)
    assert verified.returncode != 0
    assert "%Z" in verified.stderr


def test_a_fresh_unit_is_ours_and_unchanged() -> None:
    assert classify_unit(render_unit(SPEC)) is UnitState.OURS_UNCHANGED


def test_an_older_version_of_ours_is_still_ours_and_unchanged() -> None:
    older = render_unit(UnitSpec("/usr/local/bin/tailscale-wsl2", ("up",), None))
    assert older != render_unit(SPEC)
    assert classify_unit(older) is UnitState.OURS_UNCHANGED


def test_an_edited_unit_is_ours_but_edited() -> None:
    edited = render_unit(SPEC).replace("RestartSec=5", "RestartSec=30")
    assert classify_unit(edited) is UnitState.OURS_EDITED
    added = render_unit(SPEC) + "Nice=5\n"
    assert classify_unit(added) is UnitState.OURS_EDITED


def test_a_unit_without_our_marker_is_not_ours() -> None:
    without_marker = render_unit(SPEC).split("\n", 1)[1]
    assert classify_unit(without_marker) is UnitState.NOT_OURS
    foreign = "[Unit]\nDescription=my relay\n[Service]\nExecStart=/usr/bin/socat\n"
    assert classify_unit(foreign) is UnitState.NOT_OURS
    assert classify_unit("") is UnitState.NOT_OURS


def test_no_file_is_absent() -> None:
    assert classify_unit(None) is UnitState.ABSENT


@pytest.mark.parametrize("state", [UnitState.OURS_EDITED, UnitState.NOT_OURS])
def test_someone_elses_work_is_kept_without_force(state: UnitState) -> None:
    with pytest.raises(ActionableError) as caught:
        check_may_overwrite(state, "/etc/systemd/system/tailscale-wsl2.service", force=False)
    assert "tailscale-wsl2.service was" in caught.value.what
    assert caught.value.fix == "keep it, or replace it with `sudo tailscale-wsl2 install --force`"
    with pytest.raises(ActionableError, match="uninstall --force"):
        check_may_remove(state, "/etc/systemd/system/tailscale-wsl2.service", force=False)
    check_may_overwrite(state, "/etc/systemd/system/tailscale-wsl2.service", force=True)
    check_may_remove(state, "/etc/systemd/system/tailscale-wsl2.service", force=True)


@pytest.mark.parametrize("state", [UnitState.ABSENT, UnitState.OURS_UNCHANGED])
def test_our_own_unit_is_replaced_and_removed_freely(state: UnitState) -> None:
    check_may_overwrite(state, "/etc/systemd/system/tailscale-wsl2.service", force=False)
    check_may_remove(state, "/etc/systemd/system/tailscale-wsl2.service", force=False)
