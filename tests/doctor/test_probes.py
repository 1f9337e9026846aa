"""Connect classification, the one-request HTTP client, and verdicts on LocalAPI answers."""

import errno
import json
import socket
from pathlib import Path

import pytest
import trio
import trio.testing

from tailscale_wsl2.doctor.localapi import parse_status, release, status_verdict
from tailscale_wsl2.doctor.model import Status, Verdict
from tailscale_wsl2.doctor.probes import (
    HttpAnswer,
    NoAnswer,
    Unreachable,
    UnreachableKind,
    http_get,
    parse_http_answer,
    try_connect,
)
from tailscale_wsl2.net.connect import open_stream
from tailscale_wsl2.net.endpoints import TcpEndpoint, UnixEndpoint
from tests.support import localapi_standin


async def failing_with(exc: OSError) -> Unreachable:
    async def connect() -> trio.abc.Stream:
        raise exc

    result = await try_connect(connect, 2.0)
    assert isinstance(result, Unreachable)
    return result


async def test_refused_by_a_real_closed_port() -> None:
    with socket.socket() as reserved:  # bound, never listening: connecting is refused
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        result = await try_connect(lambda: open_stream(TcpEndpoint("127.0.0.1", port)), 2.0)
    assert result == Unreachable(UnreachableKind.REFUSED, "connection refused")


async def test_missing_socket_file(tmp_path: Path) -> None:
    missing = UnixEndpoint(str(tmp_path / "none.sock"))
    result = await try_connect(lambda: open_stream(missing), 2.0)
    assert result == Unreachable(UnreachableKind.MISSING, "no such socket or pipe")


async def test_a_connect_that_hangs_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async def hang() -> trio.abc.Stream:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    result = await try_connect(hang, 2.0)
    assert isinstance(result, Unreachable)
    assert result.kind is UnreachableKind.TIMED_OUT
    assert "firewall" in result.reason


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (OSError(errno.EHOSTUNREACH, "No route to host"), UnreachableKind.NO_ROUTE),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), UnreachableKind.NO_ROUTE),
        (PermissionError(errno.EACCES, "Permission denied"), UnreachableKind.DENIED),
        (OSError(errno.EIO, "I/O error"), UnreachableKind.OTHER),
    ],
)
async def test_other_connect_errors(exc: OSError, kind: UnreachableKind) -> None:
    assert (await failing_with(exc)).kind is kind


STATUS_ANSWER = localapi_standin.response("200 OK", json.dumps(localapi_standin.STATUS).encode())


def test_parses_a_content_length_answer() -> None:
    answer = parse_http_answer(STATUS_ANSWER)
    assert isinstance(answer, HttpAnswer)
    assert answer.status == 200
    assert answer.headers["tailscale-version"] == localapi_standin.DAEMON_VERSION
    assert json.loads(answer.body) == localapi_standin.STATUS


def test_decodes_a_chunked_answer() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\n"
    )
    answer = parse_http_answer(raw)
    assert isinstance(answer, HttpAnswer)
    assert answer.body == b"hello, world"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "the connection closed without an answer"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "not an HTTP answer: b'SSH-2.0-OpenSSH_9.6\\r\\n'"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nshort",
            "a broken HTTP answer: chunked body cut short",
        ),
    ],
)
def test_what_is_not_an_answer(raw: bytes, reason: str) -> None:
    assert parse_http_answer(raw) == NoAnswer(reason)


async def test_http_get_sends_what_the_cli_sends_and_reads_to_eof() -> None:
    ours, theirs = trio.testing.memory_stream_pair()

    async def daemon() -> None:
        request = await theirs.receive_some()
        assert request == (
            b"GET /localapi/v0/status HTTP/1.1\r\nHost: local-tailscaled.sock\r\n"
            b"Connection: close\r\n\r\n"
        )
        await theirs.send_all(STATUS_ANSWER)
        await theirs.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(daemon)
        answer = await http_get(ours, "/localapi/v0/status", 2.0)
    assert isinstance(answer, HttpAnswer)
    assert answer.status == 200


async def test_http_get_gives_up_after_the_timeout(autojump_clock: trio.testing.MockClock) -> None:
    ours, _silent = trio.testing.memory_stream_pair()
    assert await http_get(ours, "/", 2.0) == NoAnswer("no answer within 2 s")


def answer_with(status: dict[str, object], code: int = 200) -> HttpAnswer:
    headers = {"tailscale-version": "1.80.2-t1-g2"}
    return HttpAnswer(code, headers, json.dumps(status).encode())


def test_running_daemon_is_ok_and_described() -> None:
    answer = parse_http_answer(STATUS_ANSWER)
    assert isinstance(answer, HttpAnswer)
    verdict, status = status_verdict(answer, where="W", unanswered_fix="F")
    assert verdict.status is Status.OK
    assert verdict.finding == (
        "Tailscale 1.76.6-t1234abcd-g5678ef90 is Running as DESKTOP-WIN11 "
        "(desktop-win11.tail1234.ts.net.) 100.101.102.103, fd7a:115c:a1e0::1"
    )
    assert status is not None
    assert status.os == "windows"


@pytest.mark.parametrize(
    ("state", "fix_words"),
    [
        ("NeedsLogin", "sign in on Windows"),
        ("Stopped", "`tailscale up` in a Windows terminal"),
        ("NeedsMachineAuth", "admin console"),
        ("Starting", "wait a moment"),
    ],
)
def test_a_daemon_not_running_is_a_warning_with_its_fix(state: str, fix_words: str) -> None:
    verdict, status = status_verdict(
        answer_with({"BackendState": state, "Self": {}}), where="W", unanswered_fix="F"
    )
    assert verdict.status is Status.WARNING
    assert verdict.finding == f"Tailscale 1.80.2-t1-g2 is {state} as ? (no DNS name) " + (
        "without Tailscale IPs"
    )
    assert verdict.fix is not None
    assert fix_words in verdict.fix
    assert status is not None


def test_a_bad_gateway_is_a_failure_quoting_the_relay() -> None:
    line = "Tailscale's LocalAPI on Windows is not reachable at 127.0.0.1:41112 (refused)"
    answer = HttpAnswer(502, {}, (line + "\n").encode())
    verdict, status = status_verdict(answer, where="the Windows half", unanswered_fix="F")
    assert verdict == Verdict(
        Status.FAILURE,
        f"the Windows half answered HTTP 502: {line!r}",
        "F",
        ("asked the Windows half",),
    )
    assert status is None


@pytest.mark.parametrize(
    ("answer", "finding"),
    [
        (NoAnswer("no answer within 2 s"), "no LocalAPI answer from W: no answer within 2 s"),
        (HttpAnswer(200, {}, b"<html>"), "W answered, but not with a status: "),
        (answer_with({"Version": "1"}), "W answered, but not with a status: not a LocalAPI"),
        (answer_with({"BackendState": "Running", "Self": "me"}), "W answered, but not with a"),
    ],
)
def test_what_is_not_a_status(answer: HttpAnswer | NoAnswer, finding: str) -> None:
    verdict, status = status_verdict(answer, where="W", unanswered_fix="F")
    assert verdict.status is Status.FAILURE
    assert verdict.finding.startswith(finding)
    assert verdict.fix == "F"
    assert status is None


def test_version_falls_back_to_the_document_and_release_takes_three_numbers() -> None:
    answer = HttpAnswer(200, {}, json.dumps({"Version": "1.76.6-x", "BackendState": "x"}).encode())
    assert parse_status(answer).version == "1.76.6-x"
    assert release("1.76.6-t1234abcd-g5678ef90") == (1, 76, 6)
    assert release("1.76.6\n") == (1, 76, 6)
    assert release("unknown") is None
