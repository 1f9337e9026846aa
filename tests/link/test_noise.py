"""The link's Noise module against a published vector, an independent implementation
(the `noiseprotocol` package) and the attacks it exists to stop."""

import itertools
import mmap
import os
import random
import struct
import subprocess
import sys
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from noise.connection import NoiseConnection

from tailscale_wsl2.link import noise
from tailscale_wsl2.link.noise import (
    MAX_FRAME_PLAINTEXT,
    MAX_HANDSHAKE_MESSAGE,
    MAX_HANDSHAKE_PAYLOAD,
    PROLOGUE,
    PROTOCOL_NAME,
    REKEY_INTERVAL,
    TAG_SIZE,
    CipherState,
    Initiator,
    LiveAeads,
    NoiseFailed,
    Responder,
    SymmetricState,
    TransportCiphers,
)

LINK_KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
HEADER = struct.Struct(">I")


def _handshake(
    initiator: Initiator, responder: Responder
) -> tuple[TransportCiphers, TransportCiphers]:
    responder.read_message_1(initiator.write_message_1(b""))
    initiator.read_message_2(responder.write_message_2(b""))
    return initiator.split(), responder.split()


def _linked() -> tuple[TransportCiphers, TransportCiphers]:
    return _handshake(Initiator(LINK_KEY), Responder(LINK_KEY))


def _fixed(private_key_hex: str) -> noise.EphemeralKeySource:
    return lambda: X25519PrivateKey.from_private_bytes(bytes.fromhex(private_key_hex))


def _oracle(*, initiator: bool, link_key: bytes = LINK_KEY) -> Any:
    """The independent implementation, set up like the link."""
    connection = NoiseConnection.from_name(PROTOCOL_NAME)
    connection.set_psks(link_key)
    connection.set_prologue(PROLOGUE)
    if initiator:
        connection.set_as_initiator()
    else:
        connection.set_as_responder()
    connection.start_handshake()
    return connection


def _frame(cipher: CipherState, payload: bytes) -> tuple[bytes, bytes]:
    """A relay frame as the link will carry it: (header, sealed payload)."""
    header = HEADER.pack(len(payload) + TAG_SIZE)
    return header, cipher.seal(payload, header)


# Published vector: haskell-cryptography/cacophony, vectors/cacophony.txt
# (commit 8ee9d41e34a1a596cfa3ab12aa4069ff87dc1247), entry "Noise_NNpsk0_25519_AESGCM_SHA256".
# Messages alternate: 0 and 1 are the handshake, then 2, 4 from the initiator, 3, 5 back.
VECTOR_PROLOGUE = "4a6f686e2047616c74"
VECTOR_PSK = "54686973206973206d7920417573747269616e20706572737065637469766521"
VECTOR_INIT_EPHEMERAL = "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a"
VECTOR_RESP_EPHEMERAL = "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b"
VECTOR_HANDSHAKE_HASH = "9f3b1f9afd7767767b5b9d1069844a6154fdbdcc36dfb3e31c0fffc5c973d530"
VECTOR_MESSAGES = [
    (
        "4c756477696720766f6e204d69736573",
        "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
        "7c37a89fc17813788d30df2d59501d6066f5f8aecc3406bbd9829f2d24a531b1",
    ),
    (
        "4d757272617920526f746862617264",
        "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
        "2f29d79368ef9de4e1ae7a362fb05bf0ad668e026bf5714554497b3a720461",
    ),
    ("462e20412e20486179656b", "7c01e898a6201f36aecee532e29cd0b7f8ffa29d3366ad0dce39a6"),
    ("4361726c204d656e676572", "a9ff535aace3db6a1da1a7fb00fe2de2622bb373abad9fb42c00e0"),
    (
        "4a65616e2d426170746973746520536179",
        "6cfc49a3e65472edc2d0152abe5ce950170a8a47c959f30bd48b5f0aacf29adbfd",
    ),
    (
        "457567656e2042f6686d20766f6e2042617765726b",
        "9bc86e6d974ed21ba04604a94aa68de21677eb409ead070c0cd569b069ee19ba142aa4c1a9",
    ),
]


def test_published_vector() -> None:
    prologue, psk = bytes.fromhex(VECTOR_PROLOGUE), bytes.fromhex(VECTOR_PSK)
    initiator = Initiator(psk, prologue=prologue, new_ephemeral_key=_fixed(VECTOR_INIT_EPHEMERAL))
    responder = Responder(psk, prologue=prologue, new_ephemeral_key=_fixed(VECTOR_RESP_EPHEMERAL))
    messages = [(bytes.fromhex(p), bytes.fromhex(c)) for p, c in VECTOR_MESSAGES]

    assert initiator.write_message_1(messages[0][0]) == messages[0][1]
    assert responder.read_message_1(messages[0][1]) == messages[0][0]
    assert responder.write_message_2(messages[1][0]) == messages[1][1]
    assert initiator.read_message_2(messages[1][1]) == messages[1][0]
    assert initiator.handshake_hash.hex() == VECTOR_HANDSHAKE_HASH
    assert responder.handshake_hash.hex() == VECTOR_HANDSHAKE_HASH

    initiator_side, responder_side = initiator.split(), responder.split()
    for index, (payload, ciphertext) in enumerate(messages[2:]):
        sender, receiver = (
            (initiator_side, responder_side) if index % 2 == 0 else (responder_side, initiator_side)
        )
        assert sender.send.seal(payload, b"") == ciphertext
        assert receiver.receive.open(ciphertext, b"") == payload


# --- Interoperability with noiseprotocol -----------------------------------------------------

TRANSPORT_PAYLOADS = [b"GET /localapi/v0/status HTTP/1.1\r\n\r\n", b"", b"x" * 60000, b"\x00\xff"]


def test_our_initiator_with_their_responder() -> None:
    initiator, theirs = Initiator(LINK_KEY), _oracle(initiator=False)

    assert bytes(theirs.read_message(initiator.write_message_1(b"hello from wsl"))) == (
        b"hello from wsl"
    )
    assert initiator.read_message_2(theirs.write_message(b"hello from windows")) == (
        b"hello from windows"
    )
    assert theirs.handshake_finished
    assert initiator.handshake_hash == bytes(theirs.get_handshake_hash())

    ours = initiator.split()
    for payload in TRANSPORT_PAYLOADS:
        assert bytes(theirs.decrypt(ours.send.seal(payload, b""))) == payload
        assert ours.receive.open(theirs.encrypt(payload), b"") == payload


def test_their_initiator_with_our_responder() -> None:
    theirs, responder = _oracle(initiator=True), Responder(LINK_KEY)

    assert responder.read_message_1(theirs.write_message(b"hello from wsl")) == b"hello from wsl"
    assert bytes(theirs.read_message(responder.write_message_2(b"hello from windows"))) == (
        b"hello from windows"
    )
    assert theirs.handshake_finished
    assert responder.handshake_hash == bytes(theirs.get_handshake_hash())

    ours = responder.split()
    for payload in TRANSPORT_PAYLOADS:
        assert ours.receive.open(theirs.encrypt(payload), b"") == payload
        assert bytes(theirs.decrypt(ours.send.seal(payload, b""))) == payload


def test_transport_keys_change_every_rekey_interval_as_noise_rekey_does() -> None:
    """Both directions stay in step with an independent Rekey called at the same frame."""
    initiator, theirs = Initiator(LINK_KEY), _oracle(initiator=False)
    theirs.read_message(initiator.write_message_1(b""))
    initiator.read_message_2(theirs.write_message(b""))
    ours = initiator.split()

    for index in range(REKEY_INTERVAL + 2):
        payload = index.to_bytes(4, "big")
        assert bytes(theirs.decrypt(ours.send.seal(payload, b""))) == payload
        assert ours.receive.open(theirs.encrypt(payload), b"") == payload
        if index == REKEY_INTERVAL - 1:
            theirs.rekey_inbound_cipher()
            theirs.rekey_outbound_cipher()


# --- Handshake failures ----------------------------------------------------------------------


def test_responder_refuses_a_message_1_made_with_another_key() -> None:
    message_1 = Initiator(OTHER_KEY).write_message_1(b"")
    with pytest.raises(NoiseFailed, match="authentication"):
        Responder(LINK_KEY).read_message_1(message_1)


def test_responder_refuses_another_version() -> None:
    message_1 = Initiator(LINK_KEY, prologue=b"tailscale-wsl2 link v3").write_message_1(b"")
    with pytest.raises(NoiseFailed, match="authentication"):
        Responder(LINK_KEY).read_message_1(message_1)


def test_initiator_refuses_a_message_2_made_with_another_key() -> None:
    """An impostor answers the initiator's own ephemeral key, holding every secret but the
    link key: the initiator finds out at message 2."""
    ephemeral = "a0" * 32
    victim = Initiator(LINK_KEY, new_ephemeral_key=_fixed(ephemeral))
    victim.write_message_1(b"")
    # The impostor's own handshake, with the victim's ephemeral key but another link key.
    accomplice = Initiator(OTHER_KEY, new_ephemeral_key=_fixed(ephemeral))
    impostor = Responder(OTHER_KEY)
    impostor.read_message_1(accomplice.write_message_1(b""))
    message_2 = impostor.write_message_2(b"")
    assert accomplice.read_message_2(message_2) == b""  # a well-formed answer, for its key

    with pytest.raises(NoiseFailed, match="authentication"):
        victim.read_message_2(message_2)


def test_message_1_reflected_to_its_initiator_fails() -> None:
    initiator = Initiator(LINK_KEY)
    message_1 = initiator.write_message_1(b"")
    with pytest.raises(NoiseFailed):
        initiator.read_message_2(message_1)


def test_message_2_fed_to_a_responder_fails() -> None:
    initiator, responder = Initiator(LINK_KEY), Responder(LINK_KEY)
    responder.read_message_1(initiator.write_message_1(b""))
    message_2 = responder.write_message_2(b"")
    with pytest.raises(NoiseFailed):
        Responder(LINK_KEY).read_message_1(message_2)


def test_a_replayed_message_1_gives_the_attacker_no_usable_session() -> None:
    initiator, genuine = Initiator(LINK_KEY), Responder(LINK_KEY)
    message_1 = initiator.write_message_1(b"first")
    genuine.read_message_1(message_1)
    initiator.read_message_2(genuine.write_message_2(b""))
    initiator_side, genuine_side = initiator.split(), genuine.split()
    header, first_frame = _frame(initiator_side.send, b"POST /localapi/v0/logout")
    assert genuine_side.receive.open(first_frame, header) == b"POST /localapi/v0/logout"

    # The attacker replays the recorded message 1 to a new responder. Message 1 alone
    # carries no freshness, so it is accepted...
    fooled = Responder(LINK_KEY)
    assert fooled.read_message_1(message_1) == b"first"
    fooled.write_message_2(b"")
    fooled_side = fooled.split()
    # ...but the keys depend on the new responder's fresh ephemeral key: the recorded
    # first frame does not open, and nothing the attacker holds does.
    assert fooled.handshake_hash != genuine.handshake_hash
    with pytest.raises(NoiseFailed, match="authentication"):
        fooled_side.receive.open(first_frame, header)
    assert fooled_side.send.seal(b"same", b"") != genuine_side.send.seal(b"same", b"")


def test_a_low_order_public_key_in_message_2_is_refused() -> None:
    initiator = Initiator(LINK_KEY)
    initiator.write_message_1(b"")
    with pytest.raises(NoiseFailed, match="bad public key"):
        initiator.read_message_2(bytes(32) + bytes(TAG_SIZE))


def _message_1_carrying(public_key: bytes) -> bytes:
    """A message 1 that authenticates (made with the link key) but carries `public_key`."""
    symmetric = SymmetricState(PROTOCOL_NAME)
    symmetric.mix_hash(PROLOGUE)
    symmetric.mix_key_and_hash(LINK_KEY)
    symmetric.mix_hash(public_key)
    symmetric.mix_key(public_key)
    return public_key + symmetric.encrypt_and_hash(b"")


def test_a_low_order_public_key_in_an_authentic_message_1_is_refused_at_message_2() -> None:
    responder = Responder(LINK_KEY)
    assert responder.read_message_1(_message_1_carrying(bytes(32))) == b""
    with pytest.raises(NoiseFailed, match="bad public key"):
        responder.write_message_2(b"")


GARBAGE_KEY = bytes.fromhex("5b" * 32)
MALFORMED = {
    "empty": b"",
    "one byte": b"\x01",
    "key only": GARBAGE_KEY,
    "one byte short of a tag": GARBAGE_KEY + bytes(TAG_SIZE - 1),
    "too long": GARBAGE_KEY + bytes(MAX_HANDSHAKE_MESSAGE + 1 - len(GARBAGE_KEY)),
    "garbage key": GARBAGE_KEY + bytes(TAG_SIZE),
    "zero key": bytes(32 + TAG_SIZE + 5),
}


@pytest.mark.parametrize("message", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_message_1_raises_only_noise_failed(message: bytes) -> None:
    with pytest.raises(NoiseFailed):
        Responder(LINK_KEY).read_message_1(message)


@pytest.mark.parametrize("message", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_message_2_raises_only_noise_failed(message: bytes) -> None:
    initiator = Initiator(LINK_KEY)
    initiator.write_message_1(b"")
    with pytest.raises(NoiseFailed):
        initiator.read_message_2(message)


@given(st.binary(max_size=200))
def test_random_handshake_messages_raise_only_noise_failed(message: bytes) -> None:
    with pytest.raises(NoiseFailed):
        Responder(LINK_KEY).read_message_1(message)
    initiator = Initiator(LINK_KEY)
    initiator.write_message_1(b"")
    with pytest.raises(NoiseFailed):
        initiator.read_message_2(message)


def test_a_handshake_message_over_the_noise_limit_is_refused_before_decryption() -> None:
    with pytest.raises(NoiseFailed, match="message too long"):
        Responder(LINK_KEY).read_message_1(MALFORMED["too long"])


def test_largest_handshake_payload_fits_and_one_more_byte_does_not() -> None:
    initiator, responder = Initiator(LINK_KEY), Responder(LINK_KEY)
    message_1 = initiator.write_message_1(b"p" * MAX_HANDSHAKE_PAYLOAD)
    assert len(message_1) == MAX_HANDSHAKE_MESSAGE
    assert responder.read_message_1(message_1) == b"p" * MAX_HANDSHAKE_PAYLOAD
    with pytest.raises(NoiseFailed, match="payload too long"):
        responder.write_message_2(b"p" * (MAX_HANDSHAKE_PAYLOAD + 1))


def test_calls_out_of_turn_fail_and_end_the_handshake() -> None:
    initiator = Initiator(LINK_KEY)
    with pytest.raises(NoiseFailed, match="out of turn"):
        initiator.read_message_2(bytes(64))
    with pytest.raises(NoiseFailed, match="already failed"):
        initiator.write_message_1(b"")

    responder = Responder(LINK_KEY)
    with pytest.raises(NoiseFailed, match="out of turn"):
        responder.write_message_2(b"")

    initiator = Initiator(LINK_KEY)
    initiator.write_message_1(b"")
    with pytest.raises(NoiseFailed, match="out of turn"):
        initiator.write_message_1(b"")


def test_split_only_once_and_only_after_the_handshake() -> None:
    initiator, responder = Initiator(LINK_KEY), Responder(LINK_KEY)
    responder.read_message_1(initiator.write_message_1(b""))
    with pytest.raises(NoiseFailed, match="out of turn"):
        responder.split()

    initiator, responder = Initiator(LINK_KEY), Responder(LINK_KEY)
    _handshake(initiator, responder)
    with pytest.raises(NoiseFailed, match="out of turn"):
        initiator.split()  # a second pair of cipher states would reuse the nonces


def test_a_failed_handshake_stays_failed() -> None:
    responder = Responder(LINK_KEY)
    with pytest.raises(NoiseFailed, match="authentication"):
        responder.read_message_1(Initiator(OTHER_KEY).write_message_1(b""))
    with pytest.raises(NoiseFailed, match="already failed"):
        responder.read_message_1(Initiator(LINK_KEY).write_message_1(b""))


def test_a_link_key_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(NoiseFailed, match="32 bytes"):
        Initiator(LINK_KEY[:16])


# --- Transport -------------------------------------------------------------------------------


def test_each_direction_opens_only_what_the_other_side_sealed() -> None:
    wsl, windows = _linked()
    header, frame = _frame(wsl.send, b"request")
    assert windows.receive.open(frame, header) == b"request"
    header, frame = _frame(windows.send, b"answer")
    assert wsl.receive.open(frame, header) == b"answer"
    # A frame reflected back to its sender does not open.
    header, frame = _frame(wsl.send, b"request")
    with pytest.raises(NoiseFailed):
        wsl.receive.open(frame, header)


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize("where", ["payload", "tag", "header"])
def test_an_altered_frame_fails_and_the_genuine_one_still_opens(where: str) -> None:
    wsl, windows = _linked()
    header, frame = _frame(wsl.send, b"tailscale status")
    altered_header, altered_frame = {
        "payload": (header, _flip(frame, 0)),
        "tag": (header, _flip(frame, len(frame) - 1)),
        "header": (_flip(header, 3), frame),
    }[where]
    with pytest.raises(NoiseFailed, match="authentication"):
        windows.receive.open(altered_frame, altered_header)
    assert windows.receive.open(frame, header) == b"tailscale status"


def test_a_replayed_frame_fails() -> None:
    wsl, windows = _linked()
    header, frame = _frame(wsl.send, b"once")
    assert windows.receive.open(frame, header) == b"once"
    with pytest.raises(NoiseFailed, match="authentication"):
        windows.receive.open(frame, header)


def test_reordered_frames_fail() -> None:
    wsl, windows = _linked()
    first, second = _frame(wsl.send, b"first"), _frame(wsl.send, b"second")
    with pytest.raises(NoiseFailed, match="authentication"):
        windows.receive.open(second[1], second[0])
    assert windows.receive.open(first[1], first[0]) == b"first"


def test_a_dropped_frame_makes_the_next_fail() -> None:
    wsl, windows = _linked()
    first, _dropped, third = (_frame(wsl.send, p) for p in (b"1", b"2", b"3"))
    assert windows.receive.open(first[1], first[0]) == b"1"
    with pytest.raises(NoiseFailed, match="authentication"):
        windows.receive.open(third[1], third[0])


def test_empty_payloads_are_frames_too() -> None:
    wsl, windows = _linked()
    header, frame = _frame(wsl.send, b"")
    assert len(frame) == TAG_SIZE
    assert windows.receive.open(frame, header) == b""
    header, frame = _frame(wsl.send, b"after")
    assert windows.receive.open(frame, header) == b"after"


def test_frames_up_to_the_largest_plaintext() -> None:
    wsl, windows = _linked()
    largest = os.urandom(MAX_FRAME_PLAINTEXT)
    header, frame = _frame(wsl.send, largest)
    assert windows.receive.open(frame, header) == largest
    with pytest.raises(NoiseFailed, match="plaintext too long"):
        wsl.send.seal(largest + b"x", b"")
    with pytest.raises(NoiseFailed, match="message too long"):
        windows.receive.open(frame + b"x", header)
    with pytest.raises(NoiseFailed, match="message too short"):
        windows.receive.open(frame[: TAG_SIZE - 1], header)


def test_the_counter_stops_before_the_reserved_value() -> None:
    key = os.urandom(32)
    sender, receiver = CipherState(key, nonce=2**64 - 2), CipherState(key, nonce=2**64 - 2)
    last = sender.seal(b"last", b"")
    assert receiver.open(last, b"") == b"last"
    with pytest.raises(NoiseFailed, match="exhausted"):
        sender.seal(b"one more", b"")
    with pytest.raises(NoiseFailed, match="exhausted"):
        receiver.open(last, b"")
    assert sender.nonce == 2**64 - 1


@pytest.fixture(params=["encrypt_into", "copy"])
def into_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of writing into a caller's buffer: cryptography's `*_into`, or a copy."""
    primitives = noise._primitives()
    if request.param == "copy":
        without_into = primitives._replace(writes_into_buffers=False)
        monkeypatch.setattr(noise, "_primitives", lambda: without_into)
    elif not primitives.writes_into_buffers:
        pytest.skip("this cryptography has no AESGCM.encrypt_into")
    return str(request.param)


def test_sealing_and_opening_in_caller_buffers(into_path: str) -> None:
    wsl, windows = _linked()
    payload = os.urandom(5000)
    # As the relay will: a mapped buffer, the header in front of the sealed payload.
    with mmap.mmap(-1, 8192) as sealed, memoryview(sealed) as view:
        size = wsl.send.seal_into(payload, b"head", view[4:])
        assert size == len(payload) + TAG_SIZE
        opened = bytearray(6000)
        assert windows.receive.open_into(view[4 : 4 + size], b"head", opened) == len(payload)
        assert opened[: len(payload)] == payload
    # The caller-buffer forms and the bytes forms share the counter and the wire format.
    assert windows.receive.open(wsl.send.seal(b"next", b""), b"") == b"next"
    out = bytearray(100)
    assert wsl.receive.open_into(windows.send.seal(b"back", b""), b"", out) == 4
    assert out[:4] == b"back"


def test_open_into_leaves_no_unauthenticated_plaintext(into_path: str) -> None:
    wsl, windows = _linked()
    frame = bytearray(wsl.send.seal(b"secret request", b""))
    frame[-1] ^= 0x01
    out = mmap.mmap(-1, 32)
    out.write(b"\xaa" * 32)
    with pytest.raises(NoiseFailed, match="authentication"):
        windows.receive.open_into(frame, b"", memoryview(out))
    assert out[:] == bytes(len(b"secret request")) + b"\xaa" * (32 - len(b"secret request"))
    out.close()


def test_caller_buffers_that_are_too_small_are_refused(into_path: str) -> None:
    wsl, windows = _linked()
    with pytest.raises(NoiseFailed, match="too small"):
        wsl.send.seal_into(b"12345", b"", bytearray(5 + TAG_SIZE - 1))
    frame = wsl.send.seal(b"12345", b"")
    with pytest.raises(NoiseFailed, match="too small"):
        windows.receive.open_into(frame, b"", bytearray(4))


frames = st.lists(st.tuples(st.booleans(), st.binary(max_size=3000)), max_size=30)


@given(frames)
def test_random_frame_sequences_round_trip(sequence: list[tuple[bool, bytes]]) -> None:
    wsl, windows = _linked()
    for from_wsl, payload in sequence:
        sender, receiver = (wsl, windows) if from_wsl else (windows, wsl)
        header, frame = _frame(sender.send, payload)
        assert len(frame) == len(payload) + TAG_SIZE
        assert receiver.receive.open(frame, header) == payload


@given(st.binary(max_size=100), st.binary(max_size=8))
def test_random_bytes_never_open_and_raise_only_noise_failed(frame: bytes, ad: bytes) -> None:
    _, windows = _linked()
    with pytest.raises(NoiseFailed):
        windows.receive.open(frame, ad)
    with pytest.raises(NoiseFailed):
        windows.receive.open_into(frame, ad, bytearray(200))


# --- AES-GCM objects: made at the first frame, and only so many at once -----------------------


def test_a_state_makes_its_cipher_at_its_first_frame() -> None:
    sender, receiver = CipherState(bytes(32)), CipherState(bytes(32))
    assert [sender.holds_cipher, receiver.holds_cipher] == [False, False]  # a key is all
    assert receiver.open(sender.seal(b"first", b"ad"), b"ad") == b"first"
    assert [sender.holds_cipher, receiver.holds_cipher] == [True, True]


def test_past_the_limit_a_picked_cipher_goes_and_its_state_still_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    picks = itertools.cycle([0, 1])  # the picks of `random.randrange`, made certain
    monkeypatch.setattr(noise, "_live_aeads", LiveAeads(limit=2, choose=lambda _: next(picks)))
    pairs = [(CipherState(bytes([n]) * 32), CipherState(bytes([n]) * 32)) for n in range(3)]
    for sender, receiver in pairs:
        assert receiver.open(sender.seal(b"one", b"ad"), b"ad") == b"one"
    held = [state.holds_cipher for pair in pairs for state in pair]
    assert held == [False, False, False, False, True, True]  # two at most: the picked went
    # A state that lost its object makes a new one, with its counter where it was.
    first_sender, first_receiver = pairs[0]
    assert first_receiver.open(first_sender.seal(b"two", b"ad"), b"ad") == b"two"
    assert (first_sender.nonce, first_receiver.nonce) == (2, 2)


def test_more_states_in_use_than_the_limit_keep_some_objects_instead_of_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eight states used in turn against a limit of six (clients in a burst): oldest first
    would take each object just before its next use, a new one at every frame; a random pick
    keeps about half."""
    live = LiveAeads(limit=6, choose=random.Random(7).randrange)
    monkeypatch.setattr(noise, "_live_aeads", live)
    states = [CipherState(bytes([n]) * 32) for n in range(8)]
    frames = made = 0
    for _ in range(50):
        for state in states:
            frames += 1
            made += not state.holds_cipher
            state.seal(b"x", b"")
    assert sum(state.holds_cipher for state in states) == 6
    assert made < frames * 0.6


def test_states_that_are_gone_leave_nothing_held(monkeypatch: pytest.MonkeyPatch) -> None:
    live = LiveAeads(limit=2)
    monkeypatch.setattr(noise, "_live_aeads", live)
    for _ in range(3):  # each state goes with its loop turn; its entry is dropped later
        CipherState(bytes(32)).seal(b"x", b"")
    keeper = CipherState(bytes(32))
    keeper.seal(b"x", b"")
    assert keeper.holds_cipher  # what was dropped to make room were states already gone


def test_importing_the_module_loads_no_cryptography() -> None:
    # A half run with --insecure-no-auth imports the link's modules and never needs it.
    code = (
        "import sys, tailscale_wsl2.serve.halves; "
        "print(sorted(m for m in sys.modules if m.startswith('cryptography')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
