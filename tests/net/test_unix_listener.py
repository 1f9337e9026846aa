"""The WSL2 half's socket: where nobody else can shape it, and one half per path."""

import os
import socket
import stat
from pathlib import Path

import pytest
import trio

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.net import unix_listener
from tailscale_wsl2.net.unix_listener import lock_path, open_unix_listener


def directory(tmp_path: Path, mode: int) -> Path:
    made = tmp_path / "run"
    made.mkdir()
    made.chmod(mode)
    return made


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757], ids=["world", "group", "others"])
async def test_a_directory_others_can_write_to_is_refused(tmp_path: Path, mode: int) -> None:
    run = directory(tmp_path, mode)
    if mode == 0o775:  # group-writable counts only for a group other than root's or ours
        os.chown(run, -1, 12345)
    with pytest.raises(ActionableError) as caught:
        await open_unix_listener(run / "tailscaled.sock", mode=0o660, group=None)
    assert caught.value.what == (
        f"other users can change {run} (mode {mode:04o}, owner uid {os.geteuid()}), "
        "so they could swap the socket there"
    )
    assert caught.value.fix is not None
    assert "--socket" in caught.value.fix
    assert list(run.iterdir()) == []  # refused before anything was made there


async def test_a_sticky_directory_others_can_write_to_is_fine(tmp_path: Path) -> None:
    run = directory(tmp_path, 0o1777)  # as /tmp: others cannot touch what is ours
    unix = await open_unix_listener(run / "s.sock", mode=0o660, group=None)
    async with unix.listener:
        assert (run / "s.sock").is_socket()
    unix.remove_socket_file()


async def test_the_mode_is_the_sockets_from_birth_and_no_chmod_follows_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_chmod(*args: object, **kwargs: object) -> None:
        raise AssertionError("chmod by path: it would follow a link swapped in")

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(Path, "chmod", no_chmod)
    path = tmp_path / "s.sock"
    unix = await open_unix_listener(path, mode=0o640, group=None)
    async with unix.listener:
        status = path.lstat()
        assert stat.S_ISSOCK(status.st_mode)
        assert stat.S_IMODE(status.st_mode) == 0o640
        assert status.st_uid == os.geteuid()
    unix.remove_socket_file()


async def test_the_group_is_set_without_following_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, object]] = []
    real_chown = os.chown

    def noting_chown(path: object, uid: int, gid: int, **kwargs: object) -> None:
        calls.append(kwargs)
        real_chown(path, uid, gid, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "chown", noting_chown)
    group = 1 if os.geteuid() == 0 else os.getgroups()[-1]
    unix = await open_unix_listener(tmp_path / "s.sock", mode=0o660, group=group)
    async with unix.listener:
        assert (tmp_path / "s.sock").lstat().st_gid == group
    unix.remove_socket_file()
    assert calls == [{"follow_symlinks": False}]


async def test_a_symlink_planted_as_the_lock_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    victim.chmod(0o600)
    path = tmp_path / "s.sock"
    lock_path(path).symlink_to(victim)
    with pytest.raises(ActionableError, match="cannot listen on"):
        await open_unix_listener(path, mode=0o666, group=None)
    assert victim.read_text() == "root's file\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert not path.exists()


async def test_two_halves_starting_at_once_one_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both look for a live socket at the same time and find none; only one may go on."""
    looked = 0
    both_looked = trio.Event()
    real_clear = unix_listener._clear_stale_socket

    async def clear_then_wait_for_the_other(path: Path) -> None:
        nonlocal looked
        await real_clear(path)
        looked += 1
        if looked == 2:
            both_looked.set()
        with trio.move_on_after(1):  # the other may never get here: wait no longer
            await both_looked.wait()

    monkeypatch.setattr(unix_listener, "_clear_stale_socket", clear_then_wait_for_the_other)
    path = tmp_path / "tailscaled.sock"
    outcomes: list[object] = []

    async def start() -> None:
        try:
            outcomes.append(await open_unix_listener(path, mode=0o660, group=None))
        except ActionableError as exc:
            outcomes.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(start)
        nursery.start_soon(start)
    listeners = [o for o in outcomes if isinstance(o, unix_listener.UnixSocketListener)]
    refusals = [str(o) for o in outcomes if isinstance(o, ActionableError)]
    assert len(listeners) == 1
    assert refusals == [
        f"another tailscale-wsl2 already serves {path} (pid {os.getpid()}); "
        "stop it first, or pick another path with --socket"
    ]
    [winner] = listeners
    async with winner.listener:
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(str(path))  # the winner's socket is the one at the path
        probe.close()
    winner.remove_socket_file()
    # Let go of: the next half takes the path.
    again = await open_unix_listener(path, mode=0o660, group=None)
    await again.listener.aclose()
    again.remove_socket_file()


async def test_something_that_appears_at_the_path_meanwhile_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tailscaled.sock"
    real_bind = unix_listener._bind_privately

    def bind_while_another_program_makes_the_path(
        bound: Path, mode: int, group: int | None
    ) -> socket.socket:
        path.write_text("another program's")
        return real_bind(bound, mode, group)

    monkeypatch.setattr(unix_listener, "_bind_privately", bind_while_another_program_makes_the_path)
    with pytest.raises(ActionableError, match="appeared at"):
        await open_unix_listener(path, mode=0o660, group=None)
    assert path.read_text() == "another program's"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # and nothing of ours is left


async def test_a_path_no_client_could_connect_to_is_refused(tmp_path: Path) -> None:
    # Bound under a short name and linked into place, a long path would bind: it must not.
    path = tmp_path / ("s" * 120)
    with pytest.raises(ActionableError) as caught:
        await open_unix_listener(path, mode=0o600, group=None)
    assert caught.value.what == f"socket path is too long for a Unix socket: {path}"
    assert caught.value.fix == "pick a shorter path with --socket"
    assert list(tmp_path.iterdir()) == []  # no socket, no lock file left behind
