import os
import socket
from pathlib import Path

import pytest
import trio

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.net.endpoints import TcpEndpoint
from tailscale_wsl2.net.listeners import open_tcp_listener
from tailscale_wsl2.net.unix_listener import open_unix_listener


async def test_creates_missing_directories_and_sets_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "run" / "tailscale" / "tailscaled.sock"
    unix = await open_unix_listener(path, mode=0o660, group=None)
    async with unix.listener:
        assert path.is_socket()
        assert path.stat().st_mode & 0o777 == 0o660
        # No staging left, only the lock that says whose the path is.
        assert sorted(p.name for p in path.parent.iterdir()) == [
            ".tailscaled.sock.lock",
            "tailscaled.sock",
        ]
    unix.remove_socket_file()
    assert list(path.parent.iterdir()) == []  # both gone at exit


async def test_sets_the_group_it_is_given(tmp_path: Path) -> None:
    # Root may give any group; others only one they belong to.
    group = 1 if os.geteuid() == 0 else os.getgroups()[-1]
    path = tmp_path / "s.sock"
    unix = await open_unix_listener(path, mode=0o600, group=group)
    async with unix.listener:
        assert path.stat().st_gid == group
        assert path.stat().st_mode & 0o777 == 0o600


async def test_replaces_a_stale_socket(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    unix = await open_unix_listener(path, mode=0o660, group=None)
    async with unix.listener:
        probe = trio.socket.socket(socket.AF_UNIX)
        await probe.connect(str(path))
        probe.close()


async def test_never_takes_over_a_live_socket(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen()
    inode = path.lstat().st_ino
    with pytest.raises(ActionableError, match="another program already answers on"):
        await open_unix_listener(path, mode=0o660, group=None)
    assert path.lstat().st_ino == inode
    live.close()


async def test_refuses_a_path_that_is_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    path.write_text("precious")
    with pytest.raises(ActionableError, match="exists and is not a socket"):
        await open_unix_listener(path, mode=0o660, group=None)
    assert path.read_text() == "precious"


async def test_permission_error_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(ActionableError) as caught:
        await open_unix_listener(tmp_path / "x" / "s.sock", mode=0o660, group=None)
    assert str(caught.value) == (
        f"no permission to create {tmp_path / 'x' / 's.sock'} (Permission denied); "
        "run with sudo, or pick a path you own with --socket"
    )


async def test_removes_only_its_own_socket(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    unix = await open_unix_listener(path, mode=0o660, group=None)
    await unix.listener.aclose()
    path.unlink()
    path.write_text("someone else's")  # put there after us: not ours to remove
    unix.remove_socket_file()
    assert path.read_text() == "someone else's"
    path.unlink()
    unix.remove_socket_file()  # already gone: no error
    assert not path.exists()


async def test_port_in_use_is_one_clear_line() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(ActionableError) as caught:
        open_tcp_listener(TcpEndpoint("127.0.0.1", port))
    assert str(caught.value) == (
        f"cannot listen on 127.0.0.1:{port}: the port is in use by another program; "
        "stop that program, or pick another port with --port on both sides"
    )
    taken.close()


async def test_an_address_no_adapter_has_is_explained() -> None:
    with pytest.raises(ActionableError, match="no network adapter has that address"):
        open_tcp_listener(TcpEndpoint("192.0.2.1", 41113))


async def test_a_path_that_cannot_exist_says_to_pick_another(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(ActionableError) as caught:
        await open_unix_listener(blocker / "s.sock", mode=0o660, group=None)
    assert caught.value.what.startswith(f"cannot listen on {blocker / 's.sock'}: ")
    assert caught.value.fix == "pick another path with --socket"
