import os
import pwd
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.link import key as key_module
from tailscale_wsl2.link.key import (
    KEY_BYTES,
    KeyFileError,
    KeyProblem,
    exposure_warning,
    find_key_from_wsl,
    icacls_argv,
    key_exposure_warning,
    key_files_on_drive_c,
    load_key,
    load_or_create_key,
    mount_type,
    restrict_to_owner,
    windows_key_path,
)
from tailscale_wsl2.system import CommandResult, this_system


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
def test_interop_failure_names_the_one_key_on_drive_c(
    failure: CommandResult | None, reason: str
) -> None:
    def run(argv: Sequence[str]) -> CommandResult | None:
        return failure

    key = Path("/mnt/c/Users/Zoë Smith/AppData/Local/tailscale-wsl2/link.key")
    with pytest.raises(ActionableError) as caught:
        find_key_from_wsl(run, lambda: [key])
    assert reason in caught.value.what
    # Quoted: the fix works when copied, spaces and all.
    assert caught.value.fix == f"pass --key-file '{key}'"


def test_interop_failure_with_several_keys_names_each_and_with_none_says_to_make_one() -> None:
    keys = [
        Path("/mnt/c/Users/alice/AppData/Local/tailscale-wsl2/link.key"),
        Path("/mnt/c/Users/bob/AppData/Local/tailscale-wsl2/link.key"),
    ]
    with pytest.raises(ActionableError) as several:
        find_key_from_wsl(lambda argv: None, lambda: keys)
    assert several.value.fix == f"pass --key-file with yours of: {keys[0]}, {keys[1]}"
    with pytest.raises(ActionableError) as none:
        find_key_from_wsl(lambda argv: None, lambda: [])
    assert none.value.fix == (
        "run `tailscale-wsl2.exe install` on Windows first (it makes the key), then this again"
    )


def test_the_keys_on_drive_c_are_found_under_the_automount_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for user in ("alice", "bob"):
        key = tmp_path / "c" / "Users" / user / "AppData/Local/tailscale-wsl2/link.key"
        key.parent.mkdir(parents=True)
        key.write_text("x")
    (tmp_path / "c/Users/carol/AppData/Local").mkdir(parents=True)  # no key: not listed
    conf = f"[automount]\nroot = {tmp_path}\n"
    lookup = replace(this_system(), wsl_conf_text=lambda: conf)
    monkeypatch.setattr(key_module, "this_system", lambda: lookup)
    found = key_files_on_drive_c()
    assert [path.relative_to(tmp_path).parts[2] for path in found] == ["alice", "bob"]


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


# --- who else can read it ---------------------------------------------------------------------

MOUNTS = """\
none /mnt/wsl tmpfs rw,relatime 0 0
/dev/sdc / ext4 rw,relatime,discard,errors=remount-ro,data=ordered 0 0
C:\\134 /mnt/c 9p rw,noatime,dirsync,aname=drvfs;path=C:\\;uid=1000;gid=1000 0 0
D:\\134 /mnt/d\\040drive 9p rw,noatime,aname=drvfs;path=D:\\ 0 0
"""


def test_the_mount_a_path_is_on() -> None:
    key = Path("/mnt/c/Users/ana/AppData/Local/tailscale-wsl2/link.key")
    assert mount_type(key, MOUNTS) == "9p"
    assert mount_type(Path("/mnt/d drive/link.key"), MOUNTS) == "9p"  # \\040 is a space
    assert mount_type(Path("/etc/tailscale-wsl2/link.key"), MOUNTS) == "ext4"
    assert mount_type(Path("/mnt/cc/link.key"), MOUNTS) == "ext4"  # not under /mnt/c
    assert mount_type(Path("/x"), "") is None


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o100600])
def test_a_key_only_its_owner_can_read_gets_no_warning(mode: int) -> None:
    assert exposure_warning(Path("/etc/k"), mode, "ext4") is None


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_others_can_read_gets_the_chmod_that_fixes_it(mode: int) -> None:
    assert exposure_warning(Path("/etc/k"), mode, "ext4") == (
        f"the link key /etc/k is open to other users (mode {mode:04o}), and whoever can read "
        "it can use this Windows user's Tailscale; fix: `chmod 600 /etc/k`"
    )


def test_a_key_on_the_windows_drive_is_readable_by_every_linux_user() -> None:
    warning = exposure_warning(Path("/mnt/c/k"), 0o600, "9p")  # the mode bits say nothing
    assert warning is not None
    assert "every Linux user of every WSL distro can read it" in warning


def test_the_warning_reads_the_file_as_it_is(tmp_path: Path) -> None:
    key = tmp_path / "link.key"
    key.write_text("00" * 32)
    key.chmod(0o600)
    assert key_exposure_warning(key, lambda _: "") is None
    key.chmod(0o644)
    assert key_exposure_warning(key, lambda _: "") is not None
    assert key_exposure_warning(tmp_path / "missing", lambda _: "") is None


# --- a key file that is no key file: one line each, with the fix ------------------------------


def key_error(path: Path) -> KeyFileError:
    with pytest.raises(KeyFileError) as caught:
        load_key(path)
    return caught.value


def test_a_folder_names_the_file_in_it(tmp_path: Path) -> None:
    error = key_error(tmp_path)
    assert error.problem is KeyProblem.DIRECTORY
    assert str(error) == (
        f"{tmp_path} is a folder, not the link key file; "
        f"pass the key file in it: --key-file {tmp_path / 'link.key'}"
    )


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "link.key"
    os.mkfifo(fifo)
    # Opening a FIFO for reading blocks until a writer comes; this must return at once (a
    # thread, so that a hang is a failure here rather than a stalled run).
    errors: list[KeyFileError] = []
    reader = threading.Thread(target=lambda: errors.append(key_error(fifo)), daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading the key file blocked on a FIFO"
    [error] = errors
    assert error.problem is KeyProblem.NOT_A_FILE
    assert error.what == f"{fifo} is a named pipe (FIFO), not a link key file"


def test_a_device_is_refused_before_a_byte_is_read() -> None:
    error = key_error(Path("/dev/zero"))  # read to its end, it would fill memory
    assert error.what == "/dev/zero is a character device, not a link key file"


def test_a_symbolic_link_is_not_followed_and_its_target_is_named(tmp_path: Path) -> None:
    real = tmp_path / "real.key"
    real.write_text("ab" * 32 + "\n")
    link = tmp_path / "link.key"
    link.symlink_to(real)
    error = key_error(link)
    assert error.problem is KeyProblem.SYMLINK
    assert error.fix == f"pass the file itself: --key-file {real}"
    assert load_key(real) == bytes.fromhex("ab" * 32)  # the file itself is fine
    (tmp_path / "dangling.key").symlink_to(tmp_path / "gone")
    assert key_error(tmp_path / "dangling.key").what.endswith(
        "a symbolic link to nothing that exists"
    )


def test_an_empty_file_and_a_huge_one(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "blank").write_bytes(b"\n\n")
    (tmp_path / "huge").write_bytes(b"0" * 100_000)
    assert key_error(tmp_path / "empty").problem is KeyProblem.EMPTY
    assert key_error(tmp_path / "blank").problem is KeyProblem.EMPTY
    huge = key_error(tmp_path / "huge")
    assert huge.problem is KeyProblem.TOO_LARGE
    assert huge.what == f"{tmp_path / 'huge'} holds 100000 bytes: not a link key (64 hex digits)"


def test_paths_that_cannot_be_looked_at(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    under_a_file = key_error(tmp_path / "file" / "link.key")
    assert under_a_file.problem is KeyProblem.BAD_PATH
    assert under_a_file.what.endswith(": Not a directory")
    too_long = key_error(tmp_path / ("k" * 300))
    assert too_long.what.endswith(": File name too long")
    with_nul = key_error(Path("link\0.key"))
    assert with_nul.problem is KeyProblem.BAD_PATH


def test_a_key_file_that_is_not_readable_names_its_mode_and_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "link.key"
    path.write_text("ab" * 32 + "\n")
    path.chmod(0o600)

    def denied(*args: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)  # as for a user who is not its owner
    error = key_error(path)
    assert error.problem is KeyProblem.DENIED
    owner = pwd.getpwuid(os.getuid()).pw_name
    assert error.what == f"no permission to read the link key at {path} (mode 0600, owner {owner})"
    assert error.fix == f"run this as {owner} (e.g. with sudo), or pass --key-file PATH"


def test_the_windows_half_creates_no_key_over_a_file_that_is_no_key(tmp_path: Path) -> None:
    for problem in (tmp_path / "dir", tmp_path / "fifo"):
        (tmp_path / "dir").mkdir(exist_ok=True)
        if not (tmp_path / "fifo").exists():
            os.mkfifo(tmp_path / "fifo")
        with pytest.raises(KeyFileError):
            load_or_create_key(problem)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "fifo"]


def test_the_windows_half_says_where_it_cannot_create_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(KeyFileError, match=r"cannot read the link key at .*: Not a directory"):
        load_or_create_key(tmp_path / "file" / "sub" / "link.key")

    def read_only(*args: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", read_only)  # a folder this user may not write to
    with pytest.raises(KeyFileError) as caught:
        load_or_create_key(tmp_path / "link.key")
    assert caught.value.what == (
        f"cannot create the link key at {tmp_path / 'link.key'}: Permission denied"
    )
