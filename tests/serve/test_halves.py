"""What a half settles before its event loop: options that cannot work, and the key."""

import logging
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.net.connect import Hop
from tailscale_wsl2.net.endpoints import NamedPipeEndpoint, TcpEndpoint, UnixEndpoint
from tailscale_wsl2.plan.commands import link_fixes
from tailscale_wsl2.plan.halves import ListenPlace, Options, WindowsHalf, WslHalf
from tailscale_wsl2.serve.halves import prepare_half

KEY = bytes(range(32))


def wsl_half(key_file: Path | None, upstream: object = None) -> WslHalf:
    endpoint = upstream or TcpEndpoint("127.0.0.1", 41113)
    assert isinstance(endpoint, TcpEndpoint | UnixEndpoint | NamedPipeEndpoint)
    return WslHalf(
        socket=Path("/run/x.sock"),
        socket_mode=0o660,
        socket_group=None,
        upstream=Hop(endpoint, "the Windows half", "start it"),
        upstream_found_by="--host-ip",
        key_file=key_file,
        fixes=link_fixes(Options(port=41200), sudo=True, distro=None),
    )


def windows_half(key_file: Path | None, upstream: object) -> WindowsHalf:
    assert isinstance(upstream, TcpEndpoint | UnixEndpoint | NamedPipeEndpoint)
    place = ListenPlace(TcpEndpoint("127.0.0.1", 41113), "--listen", IPv4Network("127.0.0.1/32"))
    return WindowsHalf(
        fixed=(place,),
        adapter=None,
        follow_adapter=False,
        mirrored=False,
        upstream=Hop(upstream, "Tailscale's LocalAPI", "start it"),
        key_file=key_file,
        port=41113,
    )


def test_a_named_pipe_upstream_is_refused_off_windows() -> None:
    half = windows_half(None, NamedPipeEndpoint(r"\\.\pipe\x"))
    with pytest.raises(ActionableError) as caught:
        prepare_half(half, platform="linux")
    assert str(caught.value) == (
        r"--upstream npipe:\\.\pipe\x: named pipes exist only on Windows; "
        "drop --upstream, or give it tcp:HOST:PORT or unix:PATH"
    )
    assert prepare_half(half, platform="win32") is None


def test_a_unix_upstream_is_refused_on_windows() -> None:
    with pytest.raises(ActionableError, match="no Unix sockets"):
        prepare_half(windows_half(None, UnixEndpoint("/x.sock")), platform="win32")


def test_the_wsl2_half_is_refused_on_windows() -> None:
    with pytest.raises(ActionableError, match="serves a Unix socket"):
        prepare_half(wsl_half(None), platform="win32")


def test_the_key_is_read_and_an_open_one_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    key_file = tmp_path / "link.key"
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(0o600)
    assert prepare_half(wsl_half(key_file), platform="linux") == KEY
    assert caplog.records == []
    key_file.chmod(0o644)
    assert prepare_half(wsl_half(key_file), platform="linux") == KEY
    [warning] = [record.getMessage() for record in caplog.records]
    assert warning.endswith(f"fix: `chmod 600 {key_file}`")


def test_the_windows_half_makes_its_key(tmp_path: Path) -> None:
    key_file = tmp_path / "new" / "link.key"
    key = prepare_half(windows_half(key_file, TcpEndpoint("127.0.0.1", 41112)), platform="linux")
    assert key is not None
    assert key_file.read_text() == key.hex() + "\n"


def test_without_a_key_file_there_is_no_key() -> None:
    assert prepare_half(wsl_half(None), platform="linux") is None


def test_a_missing_key_names_the_windows_half_start_with_the_options_given(
    tmp_path: Path,
) -> None:
    with pytest.raises(ActionableError) as caught:
        prepare_half(wsl_half(tmp_path / "link.key"), platform="linux")
    assert caught.value.what == f"no link key at {tmp_path / 'link.key'}"
    assert caught.value.fix == (
        "run `tailscale-wsl2.exe up --port 41200` on Windows first (it creates the key)"
    )


@pytest.mark.parametrize("content", ["", "not hex\n"], ids=["empty", "damaged"])
def test_a_spoilt_key_names_the_windows_half_start_that_makes_a_new_one(
    tmp_path: Path, content: str
) -> None:
    (tmp_path / "link.key").write_text(content)
    with pytest.raises(ActionableError) as caught:
        prepare_half(wsl_half(tmp_path / "link.key"), platform="linux")
    assert caught.value.fix == (
        "delete it, restart the Windows half with `tailscale-wsl2.exe up --port 41200` "
        "(it makes a new one), then start this half again"
    )
