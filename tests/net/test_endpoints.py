import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailscale_wsl2.net.endpoints import (
    NamedPipeEndpoint,
    TcpEndpoint,
    UnixEndpoint,
    parse_endpoint,
    parse_ip,
)


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("tcp:127.0.0.1:41112", TcpEndpoint("127.0.0.1", 41112)),
        ("tcp:[::1]:41113", TcpEndpoint("::1", 41113)),
        ("unix:/tmp/a b.sock", UnixEndpoint("/tmp/a b.sock")),
        (
            r"npipe:\\.\pipe\ProtectedPrefix\Administrators\Tailscale\tailscaled",
            NamedPipeEndpoint(r"\\.\pipe\ProtectedPrefix\Administrators\Tailscale\tailscaled"),
        ),
    ],
)
def test_parses_each_kind(text: str, endpoint: object) -> None:
    assert parse_endpoint(text) == endpoint


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1:41112", "unknown endpoint kind '127.0.0.1'"),
        ("tcp:localhost:41112", "not an IP address: 'localhost'"),
        ("tcp:127.0.0.1", "expected tcp:HOST:PORT, got 'tcp:127.0.0.1'"),
        ("tcp:127.0.0.1:0", "not a TCP port (1-65535): '0'"),
        ("tcp:127.0.0.1:99999", "not a TCP port (1-65535): '99999'"),
        ("unix:", "expected tcp:HOST:PORT, unix:PATH or npipe:NAME, got 'unix:'"),
        ("", "expected tcp:HOST:PORT"),
    ],
)
def test_rejects_bad_endpoints_naming_the_bad_part(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        parse_endpoint(text)


def test_tcp_endpoint_prints_ipv6_in_brackets() -> None:
    assert str(TcpEndpoint("fe80::1", 41113)) == "[fe80::1]:41113"
    assert str(TcpEndpoint("172.27.64.1", 41113)) == "172.27.64.1:41113"


def test_parse_ip_normalises() -> None:
    assert parse_ip(" 172.27.64.1 ") == "172.27.64.1"
    assert parse_ip("[0:0::1]") == "::1"


@given(st.text())
def test_parse_endpoint_only_ever_raises_value_error(text: str) -> None:
    try:
        endpoint = parse_endpoint(text)
    except ValueError:
        return
    assert str(endpoint)


@pytest.mark.parametrize(("text", "port"), [("1", 1), ("65535", 65535)])
def test_the_ends_of_the_port_range(text: str, port: int) -> None:
    assert parse_endpoint(f"tcp:127.0.0.1:{text}") == TcpEndpoint("127.0.0.1", port)


def test_the_first_port_past_the_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^not a TCP port \(1-65535\): '65536'$"):
        parse_endpoint("tcp:127.0.0.1:65536")


@pytest.mark.parametrize("text", ["X127.0.0.1", "127.0.0.1X", "[127.0.0.1]]x"])
def test_only_brackets_and_spaces_are_taken_off_an_address(text: str) -> None:
    with pytest.raises(ValueError, match=r"^not an IP address"):
        parse_ip(text)
