"""The commands fixes print: each option the user gave, written as the command line takes it."""

import shlex
from pathlib import Path

import pytest

from tailscale_wsl2.net.endpoints import TcpEndpoint, UnixEndpoint
from tailscale_wsl2.plan.commands import (
    distro_of_share,
    link_fixes,
    windows_doctor_command,
    windows_path,
    windows_up_command,
    windows_words_from_wsl,
    wsl_doctor_command,
    wsl_up_command,
)
from tailscale_wsl2.plan.halves import Options


def test_defaults_add_nothing() -> None:
    assert wsl_up_command(Options(), sudo=True) == "sudo tailscale-wsl2 up"
    assert wsl_doctor_command(Options()) == "tailscale-wsl2 doctor"
    assert windows_up_command(Options(), from_wsl=True) == "tailscale-wsl2.exe up"
    assert windows_up_command(Options(), from_wsl=False) == "tailscale-wsl2.exe up"


def test_every_option_given_inside_wsl2_is_carried() -> None:
    options = Options(
        side="wsl",
        port=41200,
        host_ip="172.27.64.1",
        socket=Path("/run/my tailscale/ts.sock"),
        socket_mode=0o600,
        key_file=Path("/mnt/c/Users/Zoë Li/link.key"),
        insecure_no_auth=True,
    )
    command = wsl_up_command(options, sudo=False)
    assert shlex.split(command) == [
        "tailscale-wsl2",
        "up",
        "--side",
        "wsl",
        "--port",
        "41200",
        "--host-ip",
        "172.27.64.1",
        "--socket",
        "/run/my tailscale/ts.sock",
        "--key-file",
        "/mnt/c/Users/Zoë Li/link.key",
        "--insecure-no-auth",
        "--socket-mode",
        "0600",
    ]
    assert "--insecure-no-auth" not in wsl_up_command(options, sudo=False, with_key=True)
    # The Windows half: what both must agree on, the key file as Windows names it; not the
    # vEthernet address, which it finds (and follows) itself.
    assert windows_up_command(options, from_wsl=True) == (
        "tailscale-wsl2.exe up --side windows --port 41200 "
        '--key-file "C:\\Users\\Zoë Li\\link.key" --insecure-no-auth'
    )
    assert windows_doctor_command(options, from_wsl=True) == (
        "tailscale-wsl2.exe doctor --side windows --port 41200 "
        '--key-file "C:\\Users\\Zoë Li\\link.key" --insecure-no-auth'
    )


def test_a_wsl2_half_that_dials_loopback_needs_a_windows_half_listening_there() -> None:
    options = Options(host_ip="127.0.0.1", port=5000)
    assert windows_up_command(options, from_wsl=True) == (
        "tailscale-wsl2.exe up --port 5000 --listen 127.0.0.1"
    )
    upstream = Options(upstream=TcpEndpoint("127.0.0.1", 6000))
    assert windows_up_command(upstream, from_wsl=True) == (
        "tailscale-wsl2.exe up --port 6000 --listen 127.0.0.1"
    )
    assert wsl_doctor_command(upstream) == "tailscale-wsl2 doctor --upstream tcp:127.0.0.1:6000"


def test_a_windows_half_s_own_options() -> None:
    options = Options(
        side="windows",
        listen="127.0.0.1",
        upstream=UnixEndpoint("/tmp/api.sock"),
        key_file=Path(r"C:\keys\link.key"),
    )
    assert windows_up_command(options, from_wsl=False) == (
        "tailscale-wsl2.exe up --side windows --listen 127.0.0.1 --upstream unix:/tmp/api.sock "
        "--key-file C:\\keys\\link.key"
    )


@pytest.mark.parametrize(
    ("linux", "windows"),
    [
        (
            "/mnt/c/Users/me/AppData/Local/tailscale-wsl2/link.key",
            "C:\\Users\\me\\AppData\\Local\\tailscale-wsl2\\link.key",
        ),
        ("/mnt/d", "D:\\"),
        ("/home/me/link.key", "\\\\wsl$\\Ubuntu 24.04\\home\\me\\link.key"),
        ("/mnt/cdrom/link.key", "\\\\wsl$\\Ubuntu 24.04\\mnt\\cdrom\\link.key"),  # no letter
        ("link.key", "link.key"),  # relative: as the user gave it
    ],
)
def test_windows_names_a_path_on_its_drives_or_through_the_distro_s_share(
    linux: str, windows: str
) -> None:
    assert windows_path(Path(linux), "Ubuntu 24.04") == windows


@pytest.mark.parametrize(
    ("answer", "distro"),
    [
        ("\\\\wsl.localhost\\Ubuntu\\\n", "Ubuntu"),  # `wslpath -w /` as current WSL answers
        ("\\\\wsl$\\Ubuntu 24.04\\\n", "Ubuntu 24.04"),  # the older share; names may have spaces
        ("\\\\wsl.localhost\\Ubuntu\\home\n", None),  # not the root
        ("C:\\\n", None),
        ("wslpath: /: Invalid argument\n", None),
        ("", None),
    ],
)
def test_the_distro_is_read_off_the_share_windows_names_its_root(
    answer: str, distro: str | None
) -> None:
    assert distro_of_share(answer) == distro


def test_without_a_distro_a_path_off_the_drives_stays_as_it_is() -> None:
    """A test runs the Windows half on the same Linux, where no WSL_DISTRO_NAME is set."""
    assert windows_path(Path("/home/me/link.key"), None) == "/home/me/link.key"
    assert windows_path(Path("/mnt/c/k"), None) == "C:\\k"


def test_the_fixes_of_a_half_under_sudo() -> None:
    fixes = link_fixes(Options(key_file=Path("/k"), insecure_no_auth=True), sudo=True, distro=None)
    assert fixes.wsl_up == "sudo tailscale-wsl2 up --key-file /k --insecure-no-auth"
    assert fixes.wsl_up_with_key == "sudo tailscale-wsl2 up --key-file /k"
    assert fixes.windows_up == "tailscale-wsl2.exe up --key-file /k --insecure-no-auth"
    assert fixes.windows_up_with_key == "tailscale-wsl2.exe up --key-file /k"
    assert fixes.doctor == "tailscale-wsl2 doctor --key-file /k --insecure-no-auth"


def test_the_windows_half_s_install_from_wsl2_gets_its_own_names_for_the_options() -> None:
    """`install --windows-exe` and the fixes translate alike: the key file as Windows names it,
    a loopback host address as the address to listen on, an explicit --listen as given."""
    options = Options(
        port=5000, host_ip="127.0.0.1", key_file=Path("/mnt/c/Users/a/k.key"), insecure_no_auth=True
    )
    assert windows_words_from_wsl(options) == [
        "--port",
        "5000",
        "--listen",
        "127.0.0.1",
        "--key-file",
        "C:\\Users\\a\\k.key",
        "--insecure-no-auth",
    ]
    assert windows_words_from_wsl(Options(host_ip="172.27.64.1", listen="0.0.0.0")) == [
        "--listen",
        "0.0.0.0",
    ]
    assert windows_words_from_wsl(Options(host_ip="172.27.64.1")) == []
