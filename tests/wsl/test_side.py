"""Telling Windows, WSL2, WSL1 and plain Linux apart, and WSL2's networking mode."""

import os
import stat
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailscale_wsl2.system import read_text_if_present
from tailscale_wsl2.wsl.side import (
    DetectedMode,
    NetworkingMode,
    Side,
    detect_networking_mode,
    detect_side,
    parse_proc_net_dev_interfaces,
    parse_wslinfo_networking_mode,
    read_networking_mode,
    read_side,
)
from tests.support import FIXTURES as SUPPORT_FIXTURES

FIXTURES = SUPPORT_FIXTURES / "proc"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode("utf-8")


WSL2_RELEASE = "5.15.153.1-microsoft-standard-WSL2"
WSL1_RELEASE = "4.4.0-19041-Microsoft"
UBUNTU_RELEASE = "6.8.0-49-generic"
CUSTOM_RELEASE = "6.10.4-custom+"
WSL_ENVIRONMENT = {"WSL_DISTRO_NAME": "Ubuntu", "WSL_INTEROP": "/run/WSL/312_interop"}


def side(
    release: str,
    version_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    platform: str = "linux",
    interop: bool = False,
) -> Side:
    return detect_side(
        platform=platform,
        kernel_release=release,
        proc_version=fixture(version_file) if version_file else "",
        environ=environ or {},
        interop_registered=interop,
    )


def test_windows() -> None:
    assert side("", environ=WSL_ENVIRONMENT, platform="win32") is Side.WINDOWS


def test_wsl2_by_its_kernel() -> None:
    assert side(WSL2_RELEASE, "version-wsl2.txt") is Side.WSL2
    assert side("4.19.104-microsoft-standard") is Side.WSL2
    assert side("", "version-wsl2.txt") is Side.WSL2


def test_wsl1_by_its_kernel_whatever_else_is_there() -> None:
    assert side(WSL1_RELEASE, "version-wsl1.txt") is Side.WSL1
    assert side(WSL1_RELEASE, environ=WSL_ENVIRONMENT, interop=True) is Side.WSL1
    assert side("", "version-wsl1.txt") is Side.WSL1


def test_plain_linux_and_others() -> None:
    assert side(UBUNTU_RELEASE, "version-ubuntu.txt", {"HOME": "/root"}) is Side.LINUX
    assert side("24.1.0", platform="darwin") is Side.LINUX


@pytest.mark.parametrize(
    ("environ", "interop"),
    [
        ({"WSL_DISTRO_NAME": "Ubuntu"}, False),
        ({"WSL_INTEROP": "/run/WSL/312_interop"}, False),
        ({"container": "wsl"}, False),
        ({}, True),  # a system service: no WSL variables, but the interop registration
    ],
)
def test_wsl2_with_a_custom_kernel_by_other_signals(environ: dict[str, str], interop: bool) -> None:
    assert side(CUSTOM_RELEASE, "version-custom-kernel.txt", environ, interop=interop) is Side.WSL2


def test_a_custom_kernel_without_any_wsl_signal_is_plain_linux() -> None:
    assert side(CUSTOM_RELEASE, "version-custom-kernel.txt", {"container": "docker"}) is Side.LINUX


@given(
    st.text(),
    st.text(),
    st.text(),
    st.dictionaries(st.sampled_from(["WSL_DISTRO_NAME", "WSL_INTEROP", "container"]), st.text()),
    st.booleans(),
)
def test_detect_side_always_answers(
    platform: str, release: str, version: str, environ: dict[str, str], interop: bool
) -> None:
    found = detect_side(
        platform=platform,
        kernel_release=release,
        proc_version=version,
        environ=environ,
        interop_registered=interop,
    )
    assert found in Side


def test_read_side_on_this_machine() -> None:
    assert read_side() in Side


@pytest.mark.parametrize(
    ("output", "mode"),
    [
        ("nat\n", NetworkingMode.NAT),
        ("mirrored\n", NetworkingMode.MIRRORED),
        ("Mirrored\r\n", NetworkingMode.MIRRORED),
        ("bridged\n", NetworkingMode.OTHER),
        ("virtioproxy\n", NetworkingMode.OTHER),
        ("none\n", NetworkingMode.OTHER),
        ("wsl1\n", NetworkingMode.OTHER),
        ("", NetworkingMode.UNKNOWN),
        ("Invalid command line argument: --networking-mode\n", NetworkingMode.UNKNOWN),
    ],
)
def test_wslinfo_networking_mode(output: str, mode: NetworkingMode) -> None:
    assert parse_wslinfo_networking_mode(output) is mode


@given(st.text())
def test_wslinfo_parser_always_answers(output: str) -> None:
    assert parse_wslinfo_networking_mode(output) in NetworkingMode


@pytest.mark.parametrize(
    ("name", "interfaces"),
    [
        ("net-dev-nat.txt", ["lo", "eth0"]),
        ("net-dev-mirrored.txt", ["lo", "eth0", "eth1", "loopback0"]),
    ],
)
def test_proc_net_dev_interfaces(name: str, interfaces: list[str]) -> None:
    assert parse_proc_net_dev_interfaces(fixture(name)) == interfaces


@given(st.text())
def test_proc_net_dev_parser_returns_only_interface_names(text: str) -> None:
    for name in parse_proc_net_dev_interfaces(text):
        assert name
        assert ":" not in name
        assert not any(character.isspace() for character in name)


MIRRORED_BY_INTERFACES = DetectedMode(
    NetworkingMode.MIRRORED,
    "loopback0 interface in /proc/net/dev (only mirrored networking creates it)",
)
NAT_BY_INTERFACES = DetectedMode(
    NetworkingMode.NAT, "no loopback0 interface in /proc/net/dev (NAT is WSL's default)"
)


@pytest.mark.parametrize(
    ("wslinfo", "net_dev", "detected"),
    [
        (
            "nat\n",
            "net-dev-mirrored.txt",
            DetectedMode(NetworkingMode.NAT, "wslinfo --networking-mode"),
        ),
        ("bridged\n", None, DetectedMode(NetworkingMode.OTHER, "wslinfo --networking-mode")),
        ("usage: wslinfo ...\n", "net-dev-mirrored.txt", MIRRORED_BY_INTERFACES),
        (None, "net-dev-mirrored.txt", MIRRORED_BY_INTERFACES),
        (None, "net-dev-nat.txt", NAT_BY_INTERFACES),
        (
            None,
            None,
            DetectedMode(NetworkingMode.UNKNOWN, "neither wslinfo nor /proc/net/dev answered"),
        ),
    ],
)
def test_detect_networking_mode(
    wslinfo: str | None, net_dev: str | None, detected: DetectedMode
) -> None:
    proc_net_dev_text = fixture(net_dev) if net_dev else None
    found = detect_networking_mode(wslinfo_output=wslinfo, proc_net_dev_text=proc_net_dev_text)
    assert found == detected


def fake_wslinfo(directory: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    wslinfo = directory / "wslinfo"
    wslinfo.write_text(f"#!/bin/sh\n{script}\n")
    wslinfo.chmod(wslinfo.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.skipif(os.name != "posix", reason="runs a shell script as wslinfo")
def test_read_networking_mode_asks_wslinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_wslinfo(tmp_path, '[ "$1" = --networking-mode ] && echo mirrored', monkeypatch)
    assert read_networking_mode() == DetectedMode(
        NetworkingMode.MIRRORED, "wslinfo --networking-mode"
    )


@pytest.mark.skipif(os.name != "posix", reason="runs a shell script as wslinfo")
def test_read_networking_mode_ignores_a_failing_wslinfo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_wslinfo(tmp_path, "echo nat; exit 1", monkeypatch)
    assert read_networking_mode().method != "wslinfo --networking-mode"


def test_read_text_if_present(tmp_path: Path) -> None:
    present = tmp_path / "present"
    present.write_bytes(b"nameserver 1.1.1.1\n\xff\n")
    assert read_text_if_present(present) == "nameserver 1.1.1.1\n\ufffd\n"
    assert read_text_if_present(tmp_path / "missing") is None
    assert read_text_if_present(tmp_path) is None  # a directory


def test_a_kernel_that_names_wsl2_is_never_wsl1() -> None:
    # A custom kernel may spell Microsoft with a capital M, as WSL1's lxcore does; the WSL2
    # in its name says it is not WSL1, and WSL's environment says it is WSL2.
    assert side("6.6.36-Microsoft-custom-WSL2", environ=WSL_ENVIRONMENT) is Side.WSL2


def test_proc_net_dev_lines_without_a_colon_name_nothing() -> None:
    text = "Inter-|   Receive\n face |bytes    packets\nloopback0\n  eth0: 1 2 3\n"
    assert parse_proc_net_dev_interfaces(text) == ["eth0"]
