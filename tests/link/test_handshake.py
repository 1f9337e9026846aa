"""The link handshake, over in-memory streams: what passes, and everything that must not."""

import os

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from tailscale_wsl2.link.handshake import (
    ACCEPTED,
    ANSWER_SIZE,
    HELLO_SIZE,
    MAGIC,
    VERSION,
    HandshakeFailed,
    NoHandshake,
    WrongKey,
    answer_for,
    challenge_client,
    prove_key,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


async def run_both(client_key: bytes) -> tuple[str | None, BaseException | None]:
    """Run both sides of one handshake; return the server's verdict and the client's error."""
    server_end, client_end = trio.testing.memory_stream_pair()
    verdict: list[str | None] = []
    failure: list[BaseException | None] = [None]

    async def client() -> None:
        try:
            await prove_key(client_end, client_key)
        except HandshakeFailed as exc:
            failure[0] = exc

    async def server() -> None:
        verdict.append(await challenge_client(server_end, KEY))
        if verdict[0] is not None:
            await server_end.aclose()  # what the Windows half does with a refusal

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        nursery.start_soon(server)
    return verdict[0], failure[0]


async def test_the_same_key_passes() -> None:
    assert await run_both(KEY) == (None, None)


async def test_a_wrong_key_fails_on_both_sides() -> None:
    verdict, failure = await run_both(OTHER_KEY)
    assert verdict == "wrong key"
    assert str(failure) == "it refused the link key: the two halves use different keys"


async def answer_server_with(answer: bytes) -> str | None:
    """The server's verdict when the client answers its hello with `answer`, then closes."""
    server_end, client_end = trio.testing.memory_stream_pair()

    async def client() -> None:
        await client_end.receive_some(HELLO_SIZE)
        await client_end.send_all(answer)
        await client_end.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        return await challenge_client(server_end, KEY, timeout=1)


async def test_a_replayed_answer_fails() -> None:
    server_end, client_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(prove_key, client_end, KEY)
        assert await challenge_client(server_end, KEY) is None
    # The hello of that handshake, answered correctly, is worthless now:
    recorded_hello = MAGIC + VERSION + os.urandom(32)
    assert await answer_server_with(answer_for(KEY, recorded_hello)) == "wrong key"


async def test_an_oversized_answer_fails(autojump_clock: trio.testing.MockClock) -> None:
    assert await answer_server_with(b"\x01" * (ANSWER_SIZE + 1)) == "malformed answer"


async def test_a_short_answer_then_eof_fails(autojump_clock: trio.testing.MockClock) -> None:
    assert await answer_server_with(b"\x01" * 5) == "malformed answer"


async def test_another_version_is_named(autojump_clock: trio.testing.MockClock) -> None:
    assert await answer_server_with(b"\x02" * ANSWER_SIZE) == "unknown handshake version"


async def test_silence_fails_at_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    server_end, _client_end = trio.testing.memory_stream_pair()
    started = trio.current_time()
    assert await challenge_client(server_end, KEY, timeout=5) == "no answer within 5s"
    assert trio.current_time() - started == 5


async def test_client_refuses_a_peer_that_is_not_a_windows_half() -> None:
    server_end, client_end = trio.testing.memory_stream_pair()
    await server_end.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n" + b"x" * 100)
    with pytest.raises(NoHandshake, match="sent no tailscale-wsl2 handshake") as caught:
        await prove_key(client_end, KEY)
    assert caught.value.received is not None
    assert caught.value.received.startswith(b"HTTP/1.1 400")


async def test_a_short_banner_is_told_at_once_not_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # An SSH server greets with fewer bytes than a hello, then waits for the client.
    server_end, client_end = trio.testing.memory_stream_pair()
    await server_end.send_all(b"SSH-2.0-OpenSSH_9.6\r\n")
    started = trio.current_time()
    with pytest.raises(NoHandshake) as caught:
        await prove_key(client_end, KEY, timeout=5)
    assert caught.value.received == b"SSH-2.0-OpenSSH_9.6\r\n"
    assert trio.current_time() == started


async def test_a_close_before_any_byte_is_told_from_silence() -> None:
    server_end, client_end = trio.testing.memory_stream_pair()
    await server_end.aclose()
    with pytest.raises(NoHandshake) as caught:
        await prove_key(client_end, KEY)
    assert caught.value.received == b""


async def test_a_refused_key_is_its_own_failure() -> None:
    _verdict, failure = await run_both(OTHER_KEY)
    assert isinstance(failure, WrongKey)


async def test_client_names_a_newer_protocol() -> None:
    server_end, client_end = trio.testing.memory_stream_pair()
    await server_end.send_all(MAGIC + b"\x02" + os.urandom(HELLO_SIZE - len(MAGIC) - 1))
    with pytest.raises(HandshakeFailed, match="another handshake version"):
        await prove_key(client_end, KEY)


async def test_client_gives_up_on_silence_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _server_end, client_end = trio.testing.memory_stream_pair()
    started = trio.current_time()
    with pytest.raises(NoHandshake) as caught:
        await prove_key(client_end, KEY, timeout=5)
    assert (caught.value.received, caught.value.waited) == (None, 5)
    assert trio.current_time() - started == 5


async def test_part_of_a_hello_then_silence_is_no_mismatch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server_end, client_end = trio.testing.memory_stream_pair()
    await server_end.send_all(MAGIC + VERSION)
    with pytest.raises(HandshakeFailed, match="part of a handshake") as caught:
        await prove_key(client_end, KEY, timeout=5)
    assert not isinstance(caught.value, NoHandshake)


async def test_the_server_lets_its_caller_name_a_client_that_does_not_answer() -> None:
    server_end, client_end = trio.testing.memory_stream_pair()

    def describe(first_bytes: bytes) -> str | None:
        return f"it said {first_bytes!r}" if first_bytes.startswith(b"\x00") else None

    async def insecure_wsl_half() -> None:
        await client_end.receive_some(HELLO_SIZE)
        await client_end.send_all(b"\x00")  # SESSION_MODE, and nothing more: it waits

    async with trio.open_nursery() as nursery:
        nursery.start_soon(insecure_wsl_half)
        with trio.fail_after(5):  # told at the first byte, not at the handshake's deadline
            reason = await challenge_client(server_end, KEY, describe_first_bytes=describe)
    assert reason == "it said b'\\x00'"


async def test_accepted_is_sent_only_after_a_correct_answer() -> None:
    server_end, client_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(challenge_client, server_end, KEY)
        hello = await client_end.receive_some(HELLO_SIZE)
        await client_end.send_all(answer_for(KEY, bytes(hello)))
        assert await client_end.receive_some() == ACCEPTED


@settings(max_examples=300, deadline=None)
@given(answer=st.binary(max_size=2 * ANSWER_SIZE))
def test_no_random_answer_is_accepted(answer: bytes) -> None:
    async def check() -> None:
        with trio.fail_after(5):
            assert await answer_server_with(answer) is not None

    trio.run(check, clock=trio.testing.MockClock(autojump_threshold=0))


# --- inputs as a real link may deliver them ------------------------------------------------


async def send_in_pieces(stream: trio.abc.SendStream, data: bytes, cuts: list[int]) -> None:
    """`data` in separate sends, each once the reader has waited for more."""
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        await trio.testing.wait_all_tasks_blocked()
        await stream.send_all(data[start:end])


@pytest.mark.parametrize("cuts", [[1], [16], [ANSWER_SIZE - 1], list(range(1, ANSWER_SIZE))])
async def test_an_answer_arriving_in_pieces_is_put_together(cuts: list[int]) -> None:
    server_end, client_end = trio.testing.memory_stream_pair()
    verdict: list[str | None] = []

    async def server() -> None:
        verdict.append(await challenge_client(server_end, KEY))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        hello = await client_end.receive_some(HELLO_SIZE)
        await send_in_pieces(client_end, answer_for(KEY, bytes(hello)), cuts)
        assert await client_end.receive_some() == ACCEPTED
    assert verdict == [None]


@pytest.mark.parametrize("cuts", [[1], [len(MAGIC)], [HELLO_SIZE - 1], list(range(1, HELLO_SIZE))])
async def test_a_hello_arriving_in_pieces_is_put_together(cuts: list[int]) -> None:
    server_end, client_end = trio.testing.memory_stream_pair()
    hello = MAGIC + VERSION + os.urandom(HELLO_SIZE - len(MAGIC) - len(VERSION))

    async def server() -> None:
        await send_in_pieces(server_end, hello, cuts)
        answer = b""
        while len(answer) < ANSWER_SIZE:
            answer += await server_end.receive_some()
        assert answer == answer_for(KEY, hello)
        await server_end.send_all(ACCEPTED)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        await prove_key(client_end, KEY)


async def test_relayed_bytes_right_behind_accepted_are_left_for_the_relay() -> None:
    server_end, client_end = trio.testing.memory_stream_pair()
    first_answer = b"HTTP/1.1 200 OK\r\n"

    async def server() -> None:
        hello = MAGIC + VERSION + os.urandom(HELLO_SIZE - len(MAGIC) - len(VERSION))
        await server_end.send_all(hello)
        answer = b""
        while len(answer) < ANSWER_SIZE:
            answer += await server_end.receive_some()
        # The verdict and the first relayed bytes in one send: one segment on the wire.
        await server_end.send_all(ACCEPTED + first_answer)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        await prove_key(client_end, KEY)
    assert await client_end.receive_some() == first_answer


async def hello_of_one_handshake() -> bytes:
    server_end, client_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(challenge_client, server_end, KEY)
        hello = bytes(await client_end.receive_some(HELLO_SIZE + 1))
        await client_end.send_all(answer_for(KEY, hello))
        assert await client_end.receive_some() == ACCEPTED
    return hello


async def test_every_hello_carries_a_fresh_nonce() -> None:
    hellos = [await hello_of_one_handshake() for _ in range(8)]
    for hello in hellos:
        assert len(hello) == HELLO_SIZE
        assert hello.startswith(MAGIC + VERSION)
    nonces = {hello[len(MAGIC) + len(VERSION) :] for hello in hellos}
    assert len(nonces) == len(hellos)  # no nonce repeats: a recorded answer is worthless
    assert all(len(nonce) == 32 for nonce in nonces)
    assert all(len(set(nonce)) > 1 for nonce in nonces)  # not one byte repeated throughout


async def test_the_words_of_each_refusal_the_wsl2_half_reports() -> None:
    server_end, client_end = trio.testing.memory_stream_pair()
    await server_end.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n" + b"x" * 100)
    with pytest.raises(HandshakeFailed) as not_ours:
        await prove_key(client_end, KEY)
    assert str(not_ours.value) == (
        "it sent no tailscale-wsl2 handshake (b'HTTP/1.1 400 Bad Request\\r\\n\\r\\nxxxxxxxxxxx')"
    )
    server_end, client_end = trio.testing.memory_stream_pair()
    await server_end.send_all(MAGIC + b"\x02" + os.urandom(HELLO_SIZE - len(MAGIC) - 1))
    with pytest.raises(HandshakeFailed) as newer:
        await prove_key(client_end, KEY)
    assert str(newer.value) == "it speaks another handshake version: update both halves"
