"""Noise_NNpsk0_25519_AESGCM_SHA256 for the link: its handshake and its sealed frames.

Both halves hold the link key (32 random bytes) and nothing else, so the link
uses the Noise pattern NN (no static key pairs) with the link key as a
pre-shared key mixed in before the first message (psk0):

    -> psk, e        initiator (the WSL2 half, which dials)
    <- e, ee         responder (the Windows half)

Fresh X25519 ephemeral keys on both sides make every link's transport keys
new, and a link key stolen later does not decrypt traffic recorded earlier.
Who learns what, and when:

- Message 2 proves to the initiator that the responder holds the link key and
  is live: its keys depend on the initiator's fresh ephemeral key.
- Message 1 proves only that a holder of the link key made it at some time: it
  can be replayed. A replay gets the attacker nothing, because the transport
  keys depend on the responder's fresh ephemeral too, but the responder must
  not act on message 1's payload as if it were fresh. The responder knows its
  peer is live and holds the key when the first transport frame opens.
- The prologue names this product and link version, so a peer of another
  version derives other keys and its handshake fails at the first message.

This module is pure: it does no I/O and keeps no clock. The caller sends the
bytes it returns and feeds it the bytes that arrive. The three Noise objects
(CipherState, SymmetricState, and the HandshakeState as `Initiator` and
`Responder` for this one pattern) follow the Noise specification, revision
34; `cryptography` supplies only the primitives.

Sizes. Handshake messages obey Noise's limit of 65535 bytes. Transport frames
are not Noise transport messages on a 16-bit length: the relay frames them
itself with a 4-byte length, so a frame's plaintext may go up to
`MAX_FRAME_PLAINTEXT`, the relay's copy buffer. Noise caps messages for its
framing and for testing and streaming convenience, not for the cipher: AES-GCM
takes up to 2**39 - 256 bits (about 64 GiB) per message (NIST SP 800-38D).
What does wear an AES-GCM key out is the total volume sealed under it, so the
transport keys are replaced (Noise's Rekey, which the specification leaves to
the application to schedule) every `REKEY_INTERVAL` frames, counted alike by
both sides: a key then seals at most 16 GiB, far within the usual safety
margins, however long a link lives.

Every failure, whether a message that does not authenticate (the peer lacks
the key, or runs another version), a wrong length, a bad public key, calls in
the wrong order or an exhausted counter, raises `NoiseFailed` with a short
lower-case reason. A handshake that failed stays failed.

`cryptography` is imported when a handshake or a frame first needs it, not with
this module (`_primitives`): its Rust extension, with OpenSSL in it, is about
7 MB of a half's memory, which a half run with `--insecure-no-auth` never needs,
nor a Windows half until a WSL2 half first connects.
"""

import functools
import hashlib
import random
import struct
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

if TYPE_CHECKING:  # imported for real by `_primitives`, when first needed
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "KEY_SIZE",
    "LIVE_AEADS",
    "MAX_FRAME_PLAINTEXT",
    "MAX_HANDSHAKE_MESSAGE",
    "MAX_HANDSHAKE_PAYLOAD",
    "PROLOGUE",
    "PROTOCOL_NAME",
    "REKEY_INTERVAL",
    "TAG_SIZE",
    "CipherState",
    "Initiator",
    "LiveAeads",
    "NoiseFailed",
    "Responder",
    "SymmetricState",
    "TransportCiphers",
]

PROTOCOL_NAME = b"Noise_NNpsk0_25519_AESGCM_SHA256"
PROLOGUE = b"tailscale-wsl2 link v2"
KEY_SIZE = 32  # the link key, and every AES-256-GCM key
PUBLIC_KEY_SIZE = 32  # X25519
HASH_SIZE = 32  # SHA-256
TAG_SIZE = 16  # what sealing adds to a plaintext
MAX_HANDSHAKE_MESSAGE = 65535
MAX_HANDSHAKE_PAYLOAD = MAX_HANDSHAKE_MESSAGE - PUBLIC_KEY_SIZE - TAG_SIZE
MAX_FRAME_PLAINTEXT = 256 * 1024  # the relay's copy buffer (sockets.COPY_CHUNK_SIZE)
REKEY_INTERVAL = 2**16  # frames per transport key: at most 16 GiB of plaintext

# Noise reserves the largest counter value (for Rekey's nonce): no message is
# ever sealed with it, so a counter that reaches it is exhausted.
_RESERVED_NONCE = 2**64 - 1
# AESGCM nonces in Noise: 32 bits of zeros, then the counter, big-endian.
_NONCE = struct.Struct(">4xQ")

ReadableBuffer: TypeAlias = bytes | bytearray | memoryview
WritableBuffer: TypeAlias = bytearray | memoryview
EphemeralKeySource: TypeAlias = Callable[[], "X25519PrivateKey"]


class _Primitives(NamedTuple):
    """What this module takes from `cryptography`."""

    aesgcm: "type[AESGCM]"
    # AESGCM.encrypt_into / decrypt_into appeared in cryptography 47; with an older one,
    # sealing into a caller's buffer copies the result there instead.
    writes_into_buffers: bool
    invalid_tag: type[Exception]
    new_private_key: EphemeralKeySource
    load_public_key: Callable[[bytes], "X25519PublicKey"]
    hkdf_sha256: Callable[[bytes, int], Callable[[bytes], bytes]]  # (salt, length) -> derive


@functools.cache
def _primitives() -> _Primitives:
    """`cryptography`'s primitives, imported on the first call (see the module's docstring)."""
    from cryptography.exceptions import InvalidTag  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.x25519 import (  # noqa: PLC0415
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: PLC0415

    def hkdf_sha256(salt: bytes, length: int) -> Callable[[bytes], bytes]:
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=None).derive

    return _Primitives(
        AESGCM,
        hasattr(AESGCM, "encrypt_into"),
        InvalidTag,
        X25519PrivateKey.generate,
        X25519PublicKey.from_public_bytes,
        hkdf_sha256,
    )


def _invalid_tag() -> type[Exception]:
    """cryptography's InvalidTag, for an `except` clause (evaluated only when one is raised,
    by which time the AEAD that raised it has loaded the library)."""
    return _primitives().invalid_tag


class NoiseFailed(Exception):
    """The handshake or a frame failed; the message says why, briefly."""


class CipherState:
    """One direction's key and message counter (Noise's CipherState, key always set).

    The counter is the nonce: each frame opens only with the counter value it
    was sealed with, so a frame replayed, reordered, dropped or altered makes
    `open` fail. A failed `open` leaves the counter where it was.

    The AES-GCM object is made at the first frame, not with the state: it holds
    OpenSSL's contexts for both ways (about 2.7 KB), and a link keeps two states
    for its whole life, which may carry nothing for a long time (a connection a
    client holds open). Until then only the key is kept, and `LIVE_AEADS` bounds
    how many such objects the process holds: past it one picked at random is
    dropped (`LiveAeads`), and its state makes a new one at its next frame.
    """

    def __init__(self, key: bytes, *, nonce: int = 0, rekey_interval: int = 0) -> None:
        """`nonce` is Noise's SetNonce, for tests of the counter's end; a
        `rekey_interval` of 0 never rekeys (the handshake's own messages)."""
        if len(key) != KEY_SIZE:
            raise NoiseFailed(f"a cipher key must be {KEY_SIZE} bytes")
        self._key = key
        self._aead: AESGCM | None = None  # made at the first frame (`_cipher`)
        self._nonce = nonce
        self._rekey_interval = rekey_interval
        # The counter value at which the key is next replaced; never, without an interval.
        self._rekey_at = rekey_interval * (nonce // rekey_interval + 1) if rekey_interval else -1

    @property
    def nonce(self) -> int:
        """The counter value the next frame is sealed or opened with."""
        return self._nonce

    # `seal` and `open` run for every small frame: their checks and the counter's step are
    # written out here rather than called (`_current_nonce`, `_advance`, as the `_into`
    # forms of the bulk path call them), and `_cipher()` only to make the object.

    def seal(self, plaintext: ReadableBuffer, ad: ReadableBuffer) -> bytes:
        """`plaintext` encrypted, with its tag; `ad` is authenticated, not sent."""
        if len(plaintext) > MAX_FRAME_PLAINTEXT:
            raise NoiseFailed("plaintext too long")
        if (nonce := self._nonce) >= _RESERVED_NONCE:
            raise NoiseFailed("message counter exhausted")
        ciphertext = (self._aead or self._cipher()).encrypt(_NONCE.pack(nonce), plaintext, ad)
        self._nonce = nonce = nonce + 1
        if nonce == self._rekey_at:
            self._rekey()
        return ciphertext

    def open(self, ciphertext: ReadableBuffer, ad: ReadableBuffer) -> bytes:
        """The plaintext of the next frame, which must have been sealed with `ad`."""
        if not TAG_SIZE <= len(ciphertext) <= MAX_FRAME_PLAINTEXT + TAG_SIZE:
            _check_ciphertext_size(len(ciphertext))  # says which way it is wrong
        if (nonce := self._nonce) >= _RESERVED_NONCE:
            raise NoiseFailed("message counter exhausted")
        try:
            plaintext = (self._aead or self._cipher()).decrypt(_NONCE.pack(nonce), ciphertext, ad)
        except _invalid_tag():
            raise NoiseFailed("message failed authentication") from None
        self._nonce = nonce = nonce + 1
        if nonce == self._rekey_at:
            self._rekey()
        return plaintext

    def seal_into(self, plaintext: ReadableBuffer, ad: ReadableBuffer, out: WritableBuffer) -> int:
        """`seal`, writing the ciphertext to the start of `out`; returns its length.

        `out` must not overlap `plaintext` (AEAD output written over input not
        yet read is wrong output with a valid tag).
        """
        size = len(plaintext) + TAG_SIZE
        _check_size(len(plaintext), MAX_FRAME_PLAINTEXT, "plaintext too long")
        _check_size(size, len(out), "output buffer too small")
        nonce = self._current_nonce()
        aead = self._cipher()
        with _first_bytes(out, size) as target:
            if _primitives().writes_into_buffers:
                aead.encrypt_into(nonce, plaintext, ad, target)
            else:
                target[:] = aead.encrypt(nonce, plaintext, ad)
        self._advance()
        return size

    def open_into(self, ciphertext: ReadableBuffer, ad: ReadableBuffer, out: WritableBuffer) -> int:
        """`open`, writing the plaintext to the start of `out`; returns its length.

        On failure the bytes of `out` it would have used are zeroed, so that no
        unauthenticated plaintext is left there. `out` must not overlap
        `ciphertext`.
        """
        _check_ciphertext_size(len(ciphertext))
        size = len(ciphertext) - TAG_SIZE
        _check_size(size, len(out), "output buffer too small")
        nonce = self._current_nonce()
        aead = self._cipher()
        with _first_bytes(out, size) as target:
            try:
                if _primitives().writes_into_buffers:
                    aead.decrypt_into(nonce, ciphertext, ad, target)
                else:
                    target[:] = aead.decrypt(nonce, ciphertext, ad)
            except _invalid_tag():
                target[:] = bytes(size)
                raise NoiseFailed("message failed authentication") from None
        self._advance()
        return size

    def _cipher(self) -> "AESGCM":
        aead = self._aead
        if aead is None:
            aead = self._aead = _primitives().aesgcm(self._key)
            _live_aeads.made(self)
        return aead

    @property
    def holds_cipher(self) -> bool:
        """Whether an AES-GCM object is held now (else the next frame makes one)."""
        return self._aead is not None

    def drop_cipher(self) -> None:
        """Let go of the AES-GCM object (the next frame makes a new one); the key stays."""
        self._aead = None

    def _current_nonce(self) -> bytes:
        if self._nonce >= _RESERVED_NONCE:
            raise NoiseFailed("message counter exhausted")
        return _NONCE.pack(self._nonce)

    def _advance(self) -> None:
        self._nonce += 1
        if self._nonce == self._rekey_at:
            self._rekey()

    def _rekey(self) -> None:
        """The key replaced, as the counter reached `_rekey_at`; the next one scheduled."""
        self._rekey_at += self._rekey_interval
        # Noise's REKEY: the first 32 bytes of ENCRYPT(k, reserved nonce, empty ad, 32 zeros).
        new_key = self._cipher().encrypt(_NONCE.pack(_RESERVED_NONCE), bytes(KEY_SIZE), b"")
        self._key = new_key[:KEY_SIZE]
        self._aead = None  # the next frame makes it, with the new key


class LiveAeads:
    """The cipher states that hold an AES-GCM object, at most `limit`.

    Past the limit a state picked at random (`choose`: an index below the number held) gives
    its object up, and makes a new one at its next frame; nothing is done per frame. At random
    rather than oldest first: when more states are in use at once than the limit (a few
    hundred busy clients), oldest first takes each object just before its next use, so every
    frame makes one again, while after a random pick many objects live to their next use. Held
    by weak reference, so that a link's states go when the link does; an entry whose state is
    gone is taken over when it is picked.
    """

    def __init__(self, limit: int, choose: Callable[[int], int] | None = None) -> None:
        """`choose` defaults to `random.random` scaled: `random.randrange` takes five Python
        calls, and under load a pick comes with nearly every request."""
        self.limit = limit
        self._choose = choose or _random_index
        self._states: list[weakref.ref[CipherState]] = []

    def made(self, state: CipherState) -> None:
        entry = weakref.ref(state)
        if len(self._states) < self.limit:
            self._states.append(entry)
            return
        index = self._choose(len(self._states))
        given_up = self._states[index]()
        if given_up is not None:
            given_up.drop_cipher()
        self._states[index] = entry


def _random_index(count: int, _random: Callable[[], float] = random.random) -> int:
    return int(_random() * count)


# AES-GCM objects this process keeps at most: enough for every link of a busy half to keep
# its own both ways (256 links in use at once), a bound on what connections held open cost.
LIVE_AEADS = 512
_live_aeads = LiveAeads(LIVE_AEADS)


def _check_size(size: int, limit: int, reason: str) -> None:
    if size > limit:
        raise NoiseFailed(reason)


def _first_bytes(buffer: WritableBuffer, size: int) -> memoryview:
    """A view of `buffer`'s first `size` bytes (a slice of a bytearray would be a copy)."""
    return (buffer if isinstance(buffer, memoryview) else memoryview(buffer))[:size]


def _check_ciphertext_size(size: int) -> None:
    if size < TAG_SIZE:
        raise NoiseFailed("message too short")
    _check_size(size, MAX_FRAME_PLAINTEXT + TAG_SIZE, "message too long")


def _hkdf(chaining_key: bytes, input_key_material: bytes, outputs: int) -> list[bytes]:
    """Noise's HKDF: RFC 5869 with the chaining key as salt and no info."""
    derived = _primitives().hkdf_sha256(chaining_key, HASH_SIZE * outputs)(input_key_material)
    return [derived[i : i + HASH_SIZE] for i in range(0, len(derived), HASH_SIZE)]


class TransportCiphers(NamedTuple):
    """A finished handshake's two cipher states, oriented for its role."""

    send: CipherState
    receive: CipherState


class SymmetricState:
    """The handshake's running hash `h`, chaining key `ck` and current cipher (Noise 5.2)."""

    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= HASH_SIZE:
            initial = protocol_name.ljust(HASH_SIZE, b"\0")
        else:
            initial = hashlib.sha256(protocol_name).digest()
        self.handshake_hash = initial
        self.chaining_key = initial
        self._cipher: CipherState | None = None  # None: Noise's "empty" key

    def mix_hash(self, data: bytes) -> None:
        self.handshake_hash = hashlib.sha256(self.handshake_hash + data).digest()

    def mix_key(self, input_key_material: bytes) -> None:
        self.chaining_key, key = _hkdf(self.chaining_key, input_key_material, 2)
        self._cipher = CipherState(key)

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        self.chaining_key, hash_input, key = _hkdf(self.chaining_key, input_key_material, 3)
        self.mix_hash(hash_input)
        self._cipher = CipherState(key)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = plaintext
        if self._cipher is not None:
            ciphertext = self._cipher.seal(plaintext, self.handshake_hash)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = ciphertext
        if self._cipher is not None:
            plaintext = self._cipher.open(ciphertext, self.handshake_hash)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """(initiator to responder, responder to initiator)."""
        first, second = _hkdf(self.chaining_key, b"", 2)
        return (
            CipherState(first, rekey_interval=REKEY_INTERVAL),
            CipherState(second, rekey_interval=REKEY_INTERVAL),
        )


class _Handshake:
    """The HandshakeState for NNpsk0, one role; the subclasses name its steps."""

    _STEPS: tuple[str, ...]
    _INITIATOR: bool

    def __init__(
        self,
        link_key: bytes,
        *,
        prologue: bytes = PROLOGUE,
        new_ephemeral_key: EphemeralKeySource | None = None,
    ) -> None:
        """`new_ephemeral_key` makes the ephemeral key pair (X25519, by default): a seam for
        tests of published vectors, which fix it."""
        if len(link_key) != KEY_SIZE:
            raise NoiseFailed(f"the link key must be {KEY_SIZE} bytes")
        self._link_key = link_key
        new_ephemeral_key = new_ephemeral_key or _primitives().new_private_key
        self._ephemeral_key = new_ephemeral_key()  # made now, sent by the "e" token
        self._remote_ephemeral = b""
        self._symmetric = SymmetricState(PROTOCOL_NAME)
        self._symmetric.mix_hash(prologue)
        self._steps_done = 0
        self._failed = False

    @property
    def handshake_hash(self) -> bytes:
        """Noise's `h`: the same on both sides once the handshake is over (channel binding)."""
        return self._symmetric.handshake_hash

    def split(self) -> TransportCiphers:
        """The transport cipher states, once: a second pair would repeat nonces."""
        with self._step("split"):
            to_responder, to_initiator = self._symmetric.split()
            if self._INITIATOR:
                return TransportCiphers(send=to_responder, receive=to_initiator)
            return TransportCiphers(send=to_initiator, receive=to_responder)

    @contextmanager
    def _step(self, name: str) -> Iterator[None]:
        """Run one step of the handshake, in its turn; any failure ends the handshake."""
        if self._failed:
            raise NoiseFailed("the handshake already failed")
        if self._steps_done >= len(self._STEPS) or self._STEPS[self._steps_done] != name:
            self._failed = True
            raise NoiseFailed(f"{name} called out of turn")
        try:
            yield
        except BaseException:
            self._failed = True
            raise
        self._steps_done += 1

    def _mix_link_key(self) -> None:
        """The "psk" token."""
        self._symmetric.mix_key_and_hash(self._link_key)

    def _write_ephemeral(self) -> bytes:
        """The "e" token, sending; with a PSK it is mixed into the key too."""
        public_key = self._ephemeral_key.public_key().public_bytes_raw()
        self._symmetric.mix_hash(public_key)
        self._symmetric.mix_key(public_key)
        return public_key

    def _read_ephemeral(self, message: ReadableBuffer) -> bytes:
        """The "e" token, receiving; returns the rest of `message`."""
        if len(message) < PUBLIC_KEY_SIZE + TAG_SIZE:
            raise NoiseFailed("message too short")
        _check_size(len(message), MAX_HANDSHAKE_MESSAGE, "message too long")
        self._remote_ephemeral = bytes(message[:PUBLIC_KEY_SIZE])
        self._symmetric.mix_hash(self._remote_ephemeral)
        self._symmetric.mix_key(self._remote_ephemeral)
        return bytes(message[PUBLIC_KEY_SIZE:])

    def _mix_ephemeral_exchange(self) -> None:
        """The "ee" token."""
        try:
            remote = _primitives().load_public_key(self._remote_ephemeral)
            shared = self._ephemeral_key.exchange(remote)
        except ValueError:  # a low-order point: the shared secret would be all zeros
            raise NoiseFailed("bad public key") from None
        self._symmetric.mix_key(shared)

    def _encrypt_payload(self, payload: bytes) -> bytes:
        _check_size(len(payload), MAX_HANDSHAKE_PAYLOAD, "payload too long")
        return self._symmetric.encrypt_and_hash(payload)


class Initiator(_Handshake):
    """The WSL2 half's side: `write_message_1`, `read_message_2`, then `split`."""

    _STEPS = ("write_message_1", "read_message_2", "split")
    _INITIATOR = True

    def write_message_1(self, payload: bytes = b"") -> bytes:
        """The first message (`-> psk, e`), with `payload` encrypted in it.

        The payload is confidential and authenticated but can be replayed.
        """
        with self._step("write_message_1"):
            self._mix_link_key()
            public_key = self._write_ephemeral()
            return public_key + self._encrypt_payload(payload)

    def read_message_2(self, message: ReadableBuffer) -> bytes:
        """Take the responder's answer (`<- e, ee`); returns its payload."""
        with self._step("read_message_2"):
            encrypted_payload = self._read_ephemeral(message)
            self._mix_ephemeral_exchange()
            return self._symmetric.decrypt_and_hash(encrypted_payload)


class Responder(_Handshake):
    """The Windows half's side: `read_message_1`, `write_message_2`, then `split`."""

    _STEPS = ("read_message_1", "write_message_2", "split")
    _INITIATOR = False

    def read_message_1(self, message: ReadableBuffer) -> bytes:
        """Take the initiator's first message; returns its payload (possibly a replay)."""
        with self._step("read_message_1"):
            self._mix_link_key()
            encrypted_payload = self._read_ephemeral(message)
            return self._symmetric.decrypt_and_hash(encrypted_payload)

    def write_message_2(self, payload: bytes = b"") -> bytes:
        """The answer (`<- e, ee`), with `payload` encrypted in it."""
        with self._step("write_message_2"):
            public_key = self._write_ephemeral()
            self._mix_ephemeral_exchange()
            return public_key + self._encrypt_payload(payload)
