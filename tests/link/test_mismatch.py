"""Telling peers apart by what they said first, and the words for each mismatch."""

import pytest

from tailscale_wsl2.link.handshake import KEY_EXPECTED, MAGIC, NoHandshake, OtherVersion
from tailscale_wsl2.link.mismatch import (
    LinkFixes,
    Said,
    classify_first_words,
    describe_client_words,
    explain_no_handshake,
    explain_other_version,
    explain_out_of_step,
)
from tailscale_wsl2.net.endpoints import TcpEndpoint

OLD_HELLO = MAGIC + b"\x01" + bytes(32)  # what the first version's Windows half sends first
HERE = TcpEndpoint("172.27.64.1", 41113)
FIXES = LinkFixes(
    windows_up="tailscale-wsl2.exe up --insecure-no-auth",
    windows_up_with_key="tailscale-wsl2.exe up",
    wsl_up="sudo tailscale-wsl2 up --insecure-no-auth",
    wsl_up_with_key="sudo tailscale-wsl2 up",
    doctor="tailscale-wsl2 doctor",
    windows_doctor="tailscale-wsl2.exe doctor",
)


@pytest.mark.parametrize(
    ("received", "said"),
    [
        (None, Said.NOTHING),
        (b"", Said.CLOSED),
        (OLD_HELLO, Said.HANDSHAKE),
        (KEY_EXPECTED, Said.HANDSHAKE),  # this version's answer to a start without a handshake
        (MAGIC[:4], Said.HANDSHAKE),  # all a frame header holds: still told
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", Said.HTTP),
        (b"HTTP", Said.HTTP),
        (b"SSH-2.0-OpenSSH_9.6\r\n", Said.OTHER),
        (b"TSWSX", Said.OTHER),
    ],
)
def test_what_the_peer_said_first(received: bytes | None, said: Said) -> None:
    assert classify_first_words(received).said is said


def test_an_http_answer_is_described_by_its_status_and_server() -> None:
    words = classify_first_words(
        b"HTTP/1.0 404 File not found\r\nServer: SimpleHTTP/0.6 Python/3.11.7\r\n\r\nbody"
    )
    assert words.describe() == (
        "it answers HTTP (HTTP/1.0 404 File not found, Server: SimpleHTTP/0.6 Python/3.11.7)"
    )
    assert not words.from_this_program


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nTailscale-Version: 1.76.6\r\n\r\n{}",  # the LocalAPI, relayed
        b"HTTP/1.1 502 Bad Gateway\r\nServer: tailscale-wsl2\r\n\r\nline\n",  # the relay's 502
    ],
)
def test_answers_only_an_insecure_windows_half_gives(answer: bytes) -> None:
    assert classify_first_words(answer).from_this_program


@pytest.mark.parametrize(
    ("first", "words"),
    [
        (b"\x00", "the WSL2 half runs with --insecure-no-auth and this half without it"),
        (b"GET /localapi/v0/status HTTP/1.1\r\n", "it sent an HTTP request (GET)"),
        (b"\x01" + bytes(32), None),  # an answer: the handshake judges it
        (b"\x02" + bytes(32), None),
    ],
)
def test_what_a_client_sent_instead_of_an_answer(first: bytes, words: str | None) -> None:
    described = describe_client_words(first)
    if words is None:
        assert described is None
    else:
        assert described is not None
        assert words in described


def test_silence_names_both_causes_and_the_fix_for_each() -> None:
    what, fix = explain_no_handshake(HERE, NoHandshake(None, 5), FIXES)
    assert what == (
        "the Windows half at 172.27.64.1:41113 sent no link handshake within 5s: it runs with "
        "--insecure-no-auth, or another program holds port 41113"
    )
    assert fix == (
        "restart it without --insecure-no-auth: `tailscale-wsl2.exe up` on Windows, or stop "
        "the other program (`tailscale-wsl2 doctor` here tells which)"
    )


def test_a_banner_names_another_program() -> None:
    what, fix = explain_no_handshake(HERE, NoHandshake(b"SSH-2.0-OpenSSH\r\n", 5), FIXES)
    assert what == (
        "another program holds 172.27.64.1:41113, not the Windows half of tailscale-wsl2: "
        "it sent b'SSH-2.0-OpenSSH\\r\\n'"
    )
    assert fix.startswith("stop it (`tailscale-wsl2.exe doctor` on Windows names it)")


def test_a_relayed_answer_names_a_windows_half_without_the_handshake() -> None:
    answer = b"HTTP/1.1 400 Bad Request\r\nTailscale-Version: 1.76.6\r\n\r\n"
    what, fix = explain_no_handshake(HERE, NoHandshake(answer, 5), FIXES)
    assert what.endswith("runs with --insecure-no-auth, and this half expects the link handshake")
    assert fix == "restart it without --insecure-no-auth: `tailscale-wsl2.exe up` on Windows"


def test_a_link_out_of_step_because_the_windows_half_expects_the_handshake() -> None:
    assert explain_out_of_step(HERE, FIXES, MAGIC[:4]) == (
        "the Windows half at 172.27.64.1:41113 expects the link handshake: it runs without "
        "--insecure-no-auth, and this half with it; restart this half without "
        "--insecure-no-auth: `sudo tailscale-wsl2 up`"
    )
    assert explain_out_of_step(HERE, FIXES, b"HTTP").startswith("another program holds ")


def test_another_version_is_named_with_the_way_to_one_release() -> None:
    what, fix = explain_other_version(HERE, OtherVersion(1), FIXES)
    assert what == (
        "the Windows half at 172.27.64.1:41113 is an older tailscale-wsl2 "
        "(link version 1; this half speaks 2)"
    )
    assert fix == (
        "upgrade both halves to the same release (README: Upgrade), then restart them: "
        "`tailscale-wsl2.exe up --insecure-no-auth` on Windows, then "
        "`sudo tailscale-wsl2 up --insecure-no-auth` here"
    )
    assert "a newer tailscale-wsl2" in explain_other_version(HERE, OtherVersion(3), FIXES)[0]
