import trio
import trio.testing

from tailscale_wsl2.relay.bad_gateway import HEAD_TIMEOUT, answer_bad_gateway, bad_gateway_response


def test_response_is_one_line_with_exact_length() -> None:
    raw = bad_gateway_response("the Windows half is down;\nrun it")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert body == b"the Windows half is down; run it\n"
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 502 Bad Gateway",
        b"Server: tailscale-wsl2",
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Length: 33",
        b"Connection: close",
    ]


async def test_answers_after_reading_a_head_sent_byte_by_byte() -> None:
    client, relay_side = trio.testing.memory_stream_pair()
    request = b"GET /localapi/v0/status HTTP/1.1\r\nHost: local-tailscaled.sock\r\n\r\n"

    async def send_slowly() -> None:
        for byte in request:
            await client.send_all(bytes([byte]))
        await client.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_slowly)
        await answer_bad_gateway(relay_side, "down")
    answer = b""
    while chunk := await client.receive_some():
        answer += chunk
    assert answer == bad_gateway_response("down")


async def test_a_silent_client_gets_the_answer_after_the_head_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, relay_side = trio.testing.memory_stream_pair()
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_bad_gateway, relay_side, "down")
        answer = b""
        while b"down\n" not in answer:
            answer += await client.receive_some()
        answered_after = trio.current_time() - started
    assert answer == bad_gateway_response("down")
    assert answered_after == HEAD_TIMEOUT


async def test_a_client_that_left_ends_it_at_once_without_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, relay_side = trio.testing.memory_stream_pair()
    await client.aclose()
    started = trio.current_time()
    await answer_bad_gateway(relay_side, "down")
    assert trio.current_time() - started == 0
