import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import pytest

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.link.key import (
    KEY_BYTES,
    find_key_from_wsl,
    icacls_argv,
    load_key,
    load_or_create_key,
    restrict_to_owner,
    windows_key_path,
)
from tailscale_wsl2.system import CommandResult


def test_creates_a_private_key_once_then_reuses_it(tmp_path: Path) -> None:
    path = tmp_path / "profile" / "tailscale-wsl2" / "link.key"
    key = load_or_create_key(path)
    assert len(key) == KEY_BYTES
    assert path.read_text() == key.hex() + "\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == key
    assert load_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["link.key"]


def test_two_keys_differ(tmp_path: Path) -> None:
    assert load_or_create_key(tmp_path / "a") != load_or_create_key(tmp_path / "b")


def test_a_damaged_key_is_never_replaced_silently(tmp_path: Path) -> None:
    path = tmp_path / "link.key"
    path.write_text("not hex\n")
    with pytest.raises(ActionableError, match="is damaged"):
        load_or_create_key(path)
    assert path.read_text() == "not hex\n"


def test_wsl_side_never_creates_a_key(tmp_path: Path) -> None:
    with pytest.raises(ActionableError) as caught:
        load_key(tmp_path / "link.key")
    assert str(caught.value) == (
        f"no link key at {tmp_path / 'link.key'}; run `tailscale-wsl2.exe up` on Windows first "
        "(it creates the key), or pass --key-file PATH"
    )
    assert not (tmp_path / "link.key").exists()


def test_windows_key_lives_in_local_app_data() -> None:
    path = windows_key_path({"LOCALAPPDATA": "/users/me/AppData/Local"})
    assert path == Path("/users/me/AppData/Local/tailscale-wsl2/link.key")
    with pytest.raises(ActionableError, match="LOCALAPPDATA is not set"):
        windows_key_path({})


def test_wsl_finds_the_key_through_interop() -> None:
    calls: list[Sequence[str]] = []

    def run(argv: Sequence[str]) -> CommandResult | None:
        calls.append(argv)
        answers = {
            "cmd.exe": "C:\\Users\\Zoë\\AppData\\Local\r\n",
            "wslpath": "/mnt/c/Users/Zoë/AppData/Local\n",
        }
        return CommandResult(0, answers[argv[0]])

    expected = Path("/mnt/c/Users/Zoë/AppData/Local/tailscale-wsl2/link.key")
    assert find_key_from_wsl(run) == expected
    assert calls[1] == ["wslpath", "-u", "C:\\Users\\Zoë\\AppData\\Local"]


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (None, "cmd.exe could not be run"),
        (CommandResult(1, "'chcp' is not recognized"), "cmd.exe exited with status 1"),
        (CommandResult(0, "%LOCALAPPDATA%\r\n"), "cmd.exe answered '%LOCALAPPDATA%'"),
    ],
)
def test_interop_failure_says_what_to_pass(failure: CommandResult | None, reason: str) -> None:
    def run(argv: Sequence[str]) -> CommandResult | None:
        return failure

    with pytest.raises(ActionableError) as caught:
        find_key_from_wsl(run)
    assert reason in caught.value.what
    assert caught.value.fix == (
        "pass --key-file /mnt/c/Users/NAME/AppData/Local/tailscale-wsl2/link.key"
    )


# --- the key's ACL on Windows, through the seams -----------------------------------------------

SID = "S-1-5-21-1004336348-1177238915-682003330-1001"
WINDOWS_ENV = {"SystemRoot": r"C:\WINDOWS"}


def test_icacls_grants_the_users_sid_alone_by_absolute_path() -> None:
    path = Path(r"C:\Users\Zoë\AppData\Local\tailscale-wsl2\.link.key.42")
    assert icacls_argv(path, SID, WINDOWS_ENV) == [
        r"C:\WINDOWS\System32\icacls.exe",
        str(path),
        "/inheritance:r",
        "/grant:r",
        f"*{SID}:F",
    ]
    assert icacls_argv(path, SID, {})[0] == r"C:\Windows\System32\icacls.exe"


def windows_lockdown(
    tmp_path: Path, answer: CommandResult | None, ran: list[Sequence[str]]
) -> Callable[[Path], None]:
    def run(argv: Sequence[str]) -> CommandResult | None:
        ran.append(argv)
        return answer

    return partial(
        restrict_to_owner, run=run, user_sid=lambda: SID, environ=WINDOWS_ENV, platform="win32"
    )


def test_the_key_is_locked_to_the_sid_of_this_process(tmp_path: Path) -> None:
    ran: list[Sequence[str]] = []
    done = CommandResult(0, "processed file: ...\r\nSuccessfully processed 1 files")
    key = load_or_create_key(tmp_path / "link.key", lockdown=windows_lockdown(tmp_path, done, ran))
    [argv] = ran
    assert argv[-1] == f"*{SID}:F"
    assert argv[1].endswith(f".link.key.{os.getpid()}")  # locked before it takes its name
    assert load_key(tmp_path / "link.key") == key


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (
            CommandResult(
                5,
                "C:\\Users\\me\\AppData\\Local\\tailscale-wsl2\\.link.key.42: Access is denied."
                "\r\nSuccessfully processed 0 files; Failed processing 1 files\r\n",
            ),
            "C:\\Users\\me\\AppData\\Local\\tailscale-wsl2\\.link.key.42: Access is denied.",
        ),
        (None, "it could not be run"),
    ],
)
def test_a_failed_lockdown_is_one_line_and_leaves_nothing_behind(
    tmp_path: Path, answer: CommandResult | None, why: str
) -> None:
    path = tmp_path / "tailscale-wsl2" / "link.key"
    with pytest.raises(ActionableError) as caught:
        load_or_create_key(path, lockdown=windows_lockdown(tmp_path, answer, []))
    assert str(caught.value) == (
        f"cannot make the link key private to you: icacls failed ({why}); "
        f'check who may change that folder with: icacls "{path.parent}"'
    )
    assert list(path.parent.iterdir()) == []  # no key, no temporary file
    # So the next try starts clean, and succeeds once icacls does.
    done = CommandResult(0, "Successfully processed 1 files")
    assert len(load_or_create_key(path, lockdown=windows_lockdown(tmp_path, done, []))) == 32


def test_an_unknown_user_is_one_line_too(tmp_path: Path) -> None:
    def no_token() -> str:
        raise OSError(1008, "An attempt was made to reference a token that does not exist")

    staging = tmp_path / "k"
    staging.write_text("secret")
    with pytest.raises(ActionableError, match=r"^cannot make the link key private: this process"):
        restrict_to_owner(staging, run=never_run, user_sid=no_token, platform="win32")


def never_run(argv: Sequence[str]) -> CommandResult | None:
    raise AssertionError("icacls must not run without a SID")
