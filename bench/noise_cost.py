"""What the link's Noise layer costs: a handshake, and sealing plus opening a frame.

    .venv/bin/python bench/noise_cost.py [SECONDS_PER_FIGURE]

Prints the time of one whole handshake (both halves' work: two messages,
two ephemeral key pairs, two X25519 exchanges and both splits), then, for
frames of 200 bytes (a LocalAPI request or a watch-ipn-bus event), 64 KiB and
256 KiB (bulk transfers), the time to seal a frame and open it again, with the
header as associated data, as the relay will do per frame: returning new bytes
(`seal`/`open`) and writing into reused buffers (`seal_into`/`open_into`).
Each figure is the best of five runs, so that another process's burst does not
inflate it. Single-threaded, in this process, no I/O.
"""

import os
import struct
import sys
import time
from collections.abc import Callable

from tailscale_wsl2.link.noise import (
    MAX_FRAME_PLAINTEXT,
    TAG_SIZE,
    Initiator,
    Responder,
    TransportCiphers,
)

HEADER = struct.Struct(">I")
RUNS = 5


def best_seconds_per_call(operation: Callable[[], object], seconds: float) -> float:
    """The fastest of RUNS timings of `operation`, each over about `seconds / RUNS`."""
    calls = 1
    while True:  # find a count that takes long enough to time well
        started = time.perf_counter()
        for _ in range(calls):
            operation()
        if time.perf_counter() - started >= seconds / RUNS / 4:
            break
        calls *= 2
    calls *= 4
    best = float("inf")
    for _ in range(RUNS):
        started = time.perf_counter()
        for _ in range(calls):
            operation()
        best = min(best, (time.perf_counter() - started) / calls)
    return best


def handshake(link_key: bytes) -> tuple[TransportCiphers, TransportCiphers]:
    initiator, responder = Initiator(link_key), Responder(link_key)
    responder.read_message_1(initiator.write_message_1(b""))
    initiator.read_message_2(responder.write_message_2(b""))
    return initiator.split(), responder.split()


def seal_and_open(
    wsl: TransportCiphers, windows: TransportCiphers, size: int
) -> Callable[[], None]:
    payload = os.urandom(size)
    header = HEADER.pack(size + TAG_SIZE)

    def once() -> None:
        windows.receive.open(wsl.send.seal(payload, header), header)

    return once


def seal_and_open_into(
    wsl: TransportCiphers, windows: TransportCiphers, size: int
) -> Callable[[], None]:
    payload = memoryview(os.urandom(size))
    header = HEADER.pack(size + TAG_SIZE)
    sealed, opened = bytearray(MAX_FRAME_PLAINTEXT + TAG_SIZE), bytearray(MAX_FRAME_PLAINTEXT)
    sealed_view = memoryview(sealed)

    def once() -> None:
        length = wsl.send.seal_into(payload, header, sealed_view)
        windows.receive.open_into(sealed_view[:length], header, opened)

    return once


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    link_key = os.urandom(32)
    per_handshake = best_seconds_per_call(lambda: handshake(link_key), seconds)
    print(f"handshake, both halves:      {per_handshake * 1e6:8.1f} µs")
    wsl, windows = handshake(link_key)
    for size, label in ((200, "200 B"), (64 * 1024, "64 KiB"), (256 * 1024, "256 KiB")):
        for form, make in (("bytes", seal_and_open), ("into", seal_and_open_into)):
            per_frame = best_seconds_per_call(make(wsl, windows, size), seconds)
            rate = size / per_frame / 1e9
            print(
                f"seal+open {label:>7} ({form:5}): {per_frame * 1e6:8.2f} µs/frame"
                f"  {rate:6.2f} GB/s of payload"
            )


if __name__ == "__main__":
    main()
