"""The link handshake over real socket pairs: what passes, and what each impostor gets."""

import os
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from tailscale_wsl2.link.handshake import (
    KEY_EXPECTED,
    KEY_REFUSED,
    LINK_PREFIX,
    LINK_PROLOGUE,
    MESSAGE_1_SIZE,
    MESSAGE_2_SIZE,
    NOT_CONFIRMED,
    REFUSED_KEY,
    REPLAYED,
    FirstMessages,
    HandshakeFailed,
    InsecurePeer,
    NoHandshake,
    OtherVersion,
    WrongKey,
    accept_link,
    open_link,
)
from tailscale_wsl2.link.noise import TAG_SIZE, NoiseFailed, Responder
from tailscale_wsl2.link.sealed import SealedLink, new_scratch_buffers
from tailscale_wsl2.link.sessions import NO_AUTH_HERE
from tailscale_wsl2.net.sockets import RawSocketStream
from tests.support.sockets import unix_pair

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
FIRST_MESSAGE = len(LINK_PREFIX) + MESSAGE_1_SIZE


def stream_pair() -> tuple[RawSocketStream, RawSocketStream]:
    wsl, windows = unix_pair()
    return RawSocketStream(wsl), RawSocketStream(windows)


async def both_halves(
    wsl_key: bytes, windows_key: bytes
) -> tuple[SealedLink | BaseException, SealedLink | str, bool]:
    """Both sides of one handshake: the WSL2 half's link or error, the Windows half's
    link or refusal, and whether the Windows half saw a first message that opened."""
    wsl_end, windows_end = stream_pair()
    opened = False

    def first_message_opened() -> None:
        nonlocal opened
        opened = True

    results: dict[str, object] = {}

    async def wsl() -> None:
        try:
            results["wsl"] = await open_link(wsl_end, wsl_key, new_scratch_buffers())
        except HandshakeFailed as exc:
            results["wsl"] = exc
            wsl_end.close()

    async def windows() -> None:
        verdict = await accept_link(
            windows_end, windows_key, new_scratch_buffers(), first_message_opened
        )
        if isinstance(verdict, str):
            windows_end.close()  # what the Windows half does with a refusal
        results["windows"] = verdict

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wsl)
            nursery.start_soon(windows)
    wsl_result, windows_result = results["wsl"], results["windows"]
    assert isinstance(wsl_result, SealedLink | BaseException)
    assert isinstance(windows_result, SealedLink | str)
    return wsl_result, windows_result, opened


async def test_the_same_key_makes_a_sealed_link_both_ways() -> None:
    wsl, windows, opened = await both_halves(KEY, KEY)
    assert isinstance(wsl, SealedLink)
    assert isinstance(windows, SealedLink)
    assert opened
    # The transport keys agree, each way, and differ between the ways.
    to_windows = wsl.ciphers.send.seal(b"request", b"ad")
    assert windows.ciphers.receive.open(to_windows, b"ad") == b"request"
    to_wsl = windows.ciphers.send.seal(b"request", b"ad")
    assert wsl.ciphers.receive.open(to_wsl, b"ad") == b"request"
    assert to_wsl != to_windows
    wsl.close()
    windows.close()


async def test_a_wrong_key_fails_on_both_sides_and_is_named() -> None:
    wsl, windows, opened = await both_halves(OTHER_KEY, KEY)
    assert isinstance(wsl, WrongKey)  # its own kind, for the fix about keys (mismatch.py)
    assert str(wsl) == "it refused the link key: the two halves use different keys"
    assert windows == REFUSED_KEY
    assert not opened


# --- what the WSL2 half does with a peer that is not the Windows half --------------------------

# A fake Windows half: it gets the WSL2 half's first message and answers as it likes.
Impostor = Callable[[RawSocketStream, bytes], Awaitable[None]]


async def against(impostor: Impostor, *, timeout: float = 5) -> tuple[HandshakeFailed, bytes]:
    """The WSL2 half's failure against `impostor`, and every byte it sent meanwhile."""
    wsl_end, fake_end = stream_pair()
    sent = bytearray()
    failures: list[HandshakeFailed] = []

    async def wsl() -> None:
        with pytest.raises(HandshakeFailed) as caught:
            await open_link(wsl_end, KEY, new_scratch_buffers(), timeout=timeout)
        failures.append(caught.value)
        wsl_end.close()

    async def fake() -> None:
        first = await fake_end.receive_some(FIRST_MESSAGE)
        sent.extend(first)
        with trio.move_on_after(timeout + 1):
            await impostor(fake_end, bytes(first))
            while chunk := await fake_end.receive_some():
                sent.extend(chunk)
        fake_end.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wsl)
        nursery.start_soon(fake)
    [failure] = failures
    return failure, bytes(sent)


async def old_windows_half(stream: RawSocketStream, first: bytes) -> None:
    await stream.send_all(b"TSWSL\x01" + os.urandom(32))
    await stream.send_eof()


async def http_server(stream: RawSocketStream, first: bytes) -> None:
    await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    await stream.send_eof()


async def hangs_up(stream: RawSocketStream, first: bytes) -> None:
    await stream.send_eof()


async def random_answer(stream: RawSocketStream, first: bytes) -> None:
    await stream.send_all(os.urandom(MESSAGE_2_SIZE))


async def reflects(stream: RawSocketStream, first: bytes) -> None:
    """Sends the WSL2 half's own first message back as the answer."""
    await stream.send_all(first[len(LINK_PREFIX) :])


async def silent(stream: RawSocketStream, first: bytes) -> None:
    await trio.sleep_forever()


async def insecure_windows_half(stream: RawSocketStream, first: bytes) -> None:
    await stream.send_all(NO_AUTH_HERE)
    await stream.send_eof()


async def newer_windows_half(stream: RawSocketStream, first: bytes) -> None:
    await stream.send_all(b"TSWSL\x03" + os.urandom(40))  # then it waits for an answer


async def ssh_server(stream: RawSocketStream, first: bytes) -> None:
    await stream.send_all(b"SSH-2.0-OpenSSH_9.6\r\n")  # then it waits for the client's


@pytest.mark.parametrize(
    ("impostor", "kind", "reason"),
    [
        (old_windows_half, OtherVersion, "it is an older tailscale-wsl2 (link version 1, "),
        (newer_windows_half, OtherVersion, "it is a newer tailscale-wsl2 (link version 3, "),
        (insecure_windows_half, InsecurePeer, "it runs with --insecure-no-auth"),
        (http_server, NoHandshake, "it sent no tailscale-wsl2 handshake (b'HTTP/1.1 400 "),
        (ssh_server, NoHandshake, "it sent no tailscale-wsl2 handshake (b'SSH-2.0-"),
        (hangs_up, NoHandshake, "it sent no tailscale-wsl2 handshake (no byte)"),
        (random_answer, HandshakeFailed, "it could not prove that it holds the link key"),
        (reflects, HandshakeFailed, "it could not prove that it holds the link key"),
    ],
    ids=[
        "old-windows-half",
        "newer-windows-half",
        "insecure-windows-half",
        "http",
        "banner",
        "hang-up",
        "random-answer",
        "reflection",
    ],
)
async def test_an_impostor_gets_nothing_but_the_first_message(
    impostor: Impostor, kind: type[HandshakeFailed], reason: str
) -> None:
    with trio.fail_after(4):  # each is told before the handshake's 5 s
        failure, sent = await against(impostor)
    assert type(failure) is kind
    assert str(failure).startswith(reason)
    assert len(sent) == FIRST_MESSAGE  # no confirmation, no client byte: nothing else
    assert sent.startswith(LINK_PREFIX)


async def test_silence_fails_at_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    started = trio.current_time()
    failure, sent = await against(silent, timeout=5)
    assert isinstance(failure, NoHandshake)
    assert (failure.received, failure.waited) == (None, 5)  # told from a close, for the words
    assert trio.current_time() - started >= 5
    assert len(sent) == FIRST_MESSAGE


async def test_a_close_before_any_byte_is_told_from_silence() -> None:
    failure, _ = await against(hangs_up)
    assert isinstance(failure, NoHandshake)
    assert failure.received == b""


async def test_a_short_banner_is_told_at_once_not_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started = trio.current_time()
    failure, _ = await against(ssh_server, timeout=5)
    assert isinstance(failure, NoHandshake)
    assert failure.received == b"SSH-2.0-OpenSSH_9.6\r\n"
    assert trio.current_time() == started


async def test_an_http_answer_is_kept_to_the_end_of_its_head() -> None:
    head = b"HTTP/1.1 502 Bad Gateway\r\nServer: tailscale-wsl2\r\nContent-Length: 2\r\n\r\n"

    async def http_502(stream: RawSocketStream, first: bytes) -> None:
        await stream.send_all(head[:20])  # a head longer than message 2, in pieces
        await trio.testing.wait_all_tasks_blocked()
        await stream.send_all(head[20:] + b"x\n")

    failure, _ = await against(http_502)
    assert isinstance(failure, NoHandshake)
    assert failure.received is not None
    assert failure.received.startswith(head)  # its Server header names who answered


async def test_part_of_an_answer_then_silence_names_what_came(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def stalls(stream: RawSocketStream, first: bytes) -> None:
        await stream.send_all(b"\x9f\x03")

    failure, _ = await against(stalls, timeout=5)
    assert isinstance(failure, NoHandshake)
    assert (failure.received, failure.waited) == (b"\x9f\x03", 5)


async def test_an_http_0_9_error_page_is_no_answer() -> None:
    # What Python's http.server makes of a first message with a line end in it: a bare page.
    page = b'<!DOCTYPE HTML>\n<html lang="en">\n    <head>\n        <meta charset="utf-8">\n'

    async def http_0_9(stream: RawSocketStream, first: bytes) -> None:
        await stream.send_all(page[:MESSAGE_2_SIZE])  # as much as message 2 holds

    failure, _ = await against(http_0_9)
    assert isinstance(failure, NoHandshake)
    assert failure.received == page[:MESSAGE_2_SIZE]


@pytest.mark.parametrize("cuts", [[1], [6], [7], [MESSAGE_2_SIZE - 1], list(range(1, 48, 5))])
async def test_message_2_arriving_in_pieces_is_put_together(cuts: list[int]) -> None:
    """However the network splits message 2 (and its first bytes: text, "TSWSL"), the
    WSL2 half waits for the rest rather than take it for another program's words."""
    wsl_end, fake_end = stream_pair()
    responder = Responder(KEY, prologue=LINK_PROLOGUE)
    links: list[SealedLink] = []

    async def wsl() -> None:
        links.append(await open_link(wsl_end, KEY, new_scratch_buffers()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wsl)
        first = await receive_exactly(fake_end, FIRST_MESSAGE)
        responder.read_message_1(first[len(LINK_PREFIX) :])
        answer = responder.write_message_2()
        # The worst case for the guesses: an answer that starts like text or like "TSWSL".
        for start, end in zip([0, *cuts], [*cuts, len(answer)], strict=True):
            await trio.testing.wait_all_tasks_blocked()
            await fake_end.send_all(answer[start:end])
        confirmation = await receive_exactly(fake_end, TAG_SIZE)
    responder.split().receive.open(confirmation, LINK_PREFIX)
    assert len(links) == 1
    wsl_end.close()
    fake_end.close()


async def test_bytes_right_behind_message_2_are_left_for_the_link() -> None:
    wsl_end, fake_end = stream_pair()
    responder = Responder(KEY, prologue=LINK_PROLOGUE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(open_link, wsl_end, KEY, new_scratch_buffers())
        first = await receive_exactly(fake_end, FIRST_MESSAGE)
        responder.read_message_1(first[len(LINK_PREFIX) :])
        await fake_end.send_all(responder.write_message_2() + b"next")  # one segment
        await receive_exactly(fake_end, TAG_SIZE)
    assert wsl_end.socket.recv(16) == b"next"
    wsl_end.close()
    fake_end.close()


# --- what the Windows half does with a peer that is not the WSL2 half --------------------------


async def windows_verdict(*sends: bytes, key: bytes = KEY) -> tuple[SealedLink | str, bool, bytes]:
    """The Windows half's verdict on a peer that sends `sends` and then closes; whether a
    first message opened; what the peer received."""
    windows_end, peer_end = stream_pair()
    opened = False

    def first_message_opened() -> None:
        nonlocal opened
        opened = True

    received = bytearray()

    async def peer() -> None:
        try:
            for data in sends:
                await peer_end.send_all(data)
            await peer_end.send_eof()
        except trio.BrokenResourceError:
            pass  # refused and closed before all of it was sent
        with trio.move_on_after(5):
            try:
                while chunk := await peer_end.receive_some():
                    received.extend(chunk)
            except trio.BrokenResourceError:
                pass  # reset: closed with bytes of ours unread

    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer)
        verdict = await accept_link(windows_end, key, new_scratch_buffers(), first_message_opened)
        windows_end.close()
    peer_end.close()
    return verdict, opened, bytes(received)


@pytest.mark.parametrize(
    ("first", "reason", "answer"),
    [
        (
            b"\x00" + b"\x00\x00\x00\x05hello",
            "it sent no link handshake (a WSL2 half run with",
            KEY_EXPECTED,
        ),
        (b"TSWSL\x03" + bytes(48), "it speaks link version 3", KEY_EXPECTED),
        (
            b"GET /localapi/v0/status HTTP/1.1\r\n\r\n",
            "it sent something that is not",
            KEY_EXPECTED,
        ),
        (LINK_PREFIX + bytes(10), "it closed the connection during the handshake", b""),
        (b"", "it closed the connection during the handshake", b""),
    ],
    ids=["insecure-wsl-half", "other-version", "http-client", "cut-short", "nothing"],
)
async def test_the_windows_half_names_what_it_met(first: bytes, reason: str, answer: bytes) -> None:
    verdict, opened, received = await windows_verdict(first)
    assert isinstance(verdict, str)
    assert verdict.startswith(reason)
    assert not opened
    # Not a byte of the handshake for it; to a peer that started none, the one fixed answer
    # that tells it a Windows half expecting the handshake is here.
    assert received == answer


async def test_the_windows_half_lets_its_caller_name_what_came() -> None:
    def describe(first_bytes: bytes) -> str | None:
        return f"it said {first_bytes[:1]!r}" if first_bytes.startswith(b"\x00") else None

    windows_end, peer_end = stream_pair()
    peer_end.socket.sendall(b"\x00")  # SESSION_MODE, and nothing more: it waits
    with trio.fail_after(5):  # told at the first byte, not at a deadline
        verdict = await accept_link(
            windows_end, KEY, new_scratch_buffers(), lambda: None, None, describe
        )
    assert verdict == "it said b'\\x00'"
    assert peer_end.socket.recv(16) == KEY_EXPECTED
    windows_end.close()
    peer_end.close()


async def tapped_handshake() -> tuple[bytes, bytes]:
    """What a real WSL2 half sent on a link it completed: first message, confirmation."""
    wsl_end, tap_in = stream_pair()
    tap_out, windows_end = stream_pair()
    from_wsl = bytearray()

    async def tap() -> None:
        first = await receive_exactly(tap_in, FIRST_MESSAGE)
        from_wsl.extend(first)
        await tap_out.send_all(first)
        await tap_in.send_all(await receive_exactly(tap_out, MESSAGE_2_SIZE))
        confirmation = await receive_exactly(tap_in, TAG_SIZE)
        from_wsl.extend(confirmation)
        await tap_out.send_all(confirmation)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tap)
        nursery.start_soon(accept_link, windows_end, KEY, new_scratch_buffers(), lambda: None)
        await open_link(wsl_end, KEY, new_scratch_buffers())
    for end in (wsl_end, tap_in, tap_out, windows_end):
        end.close()
    return bytes(from_wsl[:FIRST_MESSAGE]), bytes(from_wsl[FIRST_MESSAGE:])


async def receive_exactly(stream: RawSocketStream, size: int) -> bytes:
    received = b""
    while len(received) < size:
        chunk = await stream.receive_some(size - len(received))
        assert chunk
        received += chunk
    return received


async def test_a_replayed_handshake_is_never_admitted() -> None:
    first, confirmation = await tapped_handshake()
    verdict, opened, received = await windows_verdict(first, confirmation)
    assert opened  # message 1 is a replay the Windows half cannot tell at first...
    assert len(received) == MESSAGE_2_SIZE  # ...so it answers it,
    assert verdict == NOT_CONFIRMED  # but the old confirmation does not open under new keys


async def test_a_first_message_seen_before_is_refused_at_once() -> None:
    first, _ = await tapped_handshake()
    seen = FirstMessages()
    assert not seen.seen_before(first[len(LINK_PREFIX) :])  # the original, when it came
    windows_end, peer_end = stream_pair()
    opened: list[bool] = []
    peer_end.socket.sendall(first)
    verdict = await accept_link(
        windows_end, KEY, new_scratch_buffers(), lambda: opened.append(True), seen
    )
    assert verdict == REPLAYED
    assert opened == []  # never counted as a key holder's
    windows_end.close()
    assert peer_end.socket.recv(100) == b""  # no message 2: no key exchange spent on it
    peer_end.close()


def test_first_messages_are_remembered_up_to_a_bound() -> None:
    seen = FirstMessages(size=2)
    assert not seen.seen_before(b"a" * 32)
    assert seen.seen_before(b"a" * 32)
    assert not seen.seen_before(b"b" * 32)
    assert not seen.seen_before(b"c" * 32)  # the oldest ("a") goes
    assert not seen.seen_before(b"a" * 32)


async def test_a_replayed_first_message_alone_is_not_admitted() -> None:
    first, _ = await tapped_handshake()
    verdict, opened, _ = await windows_verdict(first)
    assert opened
    assert isinstance(verdict, str)
    assert verdict.startswith("it closed the connection during the handshake, before confirming")


async def test_a_relayed_handshake_leaves_the_relay_without_the_keys() -> None:
    """The oracle attack: relay the real halves' handshake, then speak on the link."""
    wsl_end, relay_in = stream_pair()
    relay_out, windows_end = stream_pair()
    windows: list[SealedLink | str] = []

    async def windows_half() -> None:
        windows.append(await accept_link(windows_end, KEY, new_scratch_buffers(), lambda: None))

    async def relay() -> None:
        await relay_out.send_all(await receive_exactly(relay_in, FIRST_MESSAGE))
        await relay_in.send_all(await receive_exactly(relay_out, MESSAGE_2_SIZE))
        await relay_out.send_all(await receive_exactly(relay_in, TAG_SIZE))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(windows_half)
        nursery.start_soon(relay)
        wsl = await open_link(wsl_end, KEY, new_scratch_buffers())
    [link] = windows
    assert isinstance(link, SealedLink)  # the real halves are linked, through the relay...
    # ...and what the relay makes of the bytes it saw opens under no key it could have:
    # a frame of its own fails where the real half's opens.
    with pytest.raises(NoiseFailed):
        link.ciphers.receive.open(os.urandom(TAG_SIZE + 5), b"\x00\x00\x00\x05")
    assert link.ciphers.receive.open(wsl.ciphers.send.seal(b"hello", b"ad"), b"ad") == b"hello"
    for end in (wsl_end, relay_in, relay_out, windows_end):
        end.close()


async def test_the_windows_half_reads_no_further_than_the_confirmation() -> None:
    """Bytes after the handshake (the first session's frame) stay on the socket."""
    wsl_end, windows_end = stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(open_link, wsl_end, KEY, new_scratch_buffers())
        link = await accept_link(windows_end, KEY, new_scratch_buffers(), lambda: None)
    assert isinstance(link, SealedLink)
    wsl_end.socket.sendall(b"next")
    assert windows_end.socket.recv(16) == b"next"
    wsl_end.close()
    windows_end.close()


async def test_key_refused_is_what_a_wrong_key_gets() -> None:
    wsl_end, windows_end = stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_link, windows_end, KEY, new_scratch_buffers(), lambda: None)
        wsl_end.socket.sendall(LINK_PREFIX + os.urandom(MESSAGE_1_SIZE))
        assert await receive_exactly(wsl_end, len(KEY_REFUSED)) == KEY_REFUSED
    wsl_end.close()
    windows_end.close()


@settings(max_examples=200, deadline=None)
@given(first=st.binary(min_size=MESSAGE_1_SIZE, max_size=MESSAGE_1_SIZE), tail=st.binary())
def test_no_made_up_first_message_opens(first: bytes, tail: bytes) -> None:
    async def check() -> None:
        with trio.fail_after(5):
            verdict, opened, _ = await windows_verdict(LINK_PREFIX + first, tail)
        assert isinstance(verdict, str)
        assert not opened

    trio.run(check)


def test_the_prefix_is_not_an_http_request_nor_session_mode() -> None:
    # A Windows half run with --insecure-no-auth takes a link that starts with 0x00 for
    # framed sessions; this one must go to its raw path, which answers in HTTP.
    assert LINK_PREFIX[:1] not in (b"\x00", b"G", b"P", b"H")
