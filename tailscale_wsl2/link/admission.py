"""The link between the halves, as each half's relay sees it.

The Windows half admits a connection only from the subnet it serves (the WSL
adapter's, or loopback) and only once the handshake has proven the link key
and sealed the link (`handshake.py`); how long a handshake may take and how
many may be under way is the relay's to bound (`relay/pending.py`). The WSL2
half's connector opens the Windows half and completes the handshake before the
first client byte flows. `--insecure-no-auth` leaves the handshake out on both
sides (the subnet check stays), and the link is cleartext.

A failed handshake is told apart from a mismatch (`mismatch.py`): a peer that is
no Windows half expecting the handshake (one run with `--insecure-no-auth`, a
web server, an older release) is named as such, with the fix, in the line the
client gets.
"""

import ipaddress
from collections.abc import Awaitable, Callable

import trio

from tailscale_wsl2.link.handshake import (
    FirstMessages,
    HandshakeFailed,
    InsecurePeer,
    NoHandshake,
    OtherVersion,
    WrongKey,
    accept_link,
    open_link,
)
from tailscale_wsl2.link.mismatch import (
    LinkFixes,
    describe_client_words,
    explain_insecure_windows_half,
    explain_no_handshake,
    explain_other_version,
    explain_wrong_key,
)
from tailscale_wsl2.link.sealed import SealedLink, new_scratch_buffers
from tailscale_wsl2.net.connect import Hop, UpstreamUnavailable, hop_connector
from tailscale_wsl2.net.endpoints import IPNetwork
from tailscale_wsl2.net.pump import SpareBuffers
from tailscale_wsl2.net.sockets import PEER_GONE, RawSocketStream

__all__ = [
    "OPENING_AT_ONCE",
    "admit_windows_peer",
    "authenticated_connector",
    "explain_handshake_failure",
]

# Links whose handshake the WSL2 half has under way at once; more wait their turn. A burst
# of clients (hundreds at once) would otherwise arrive at the Windows half as hundreds of
# handshakes, past the budget it keeps for them (relay/pending.py).
OPENING_AT_ONCE = 64


def _peer_address(stream: RawSocketStream) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(stream.socket.getpeername()[0])


async def admit_windows_peer(
    stream: trio.abc.Stream,
    allowed_peers: IPNetwork,
    key: bytes | None,
    scratch: SpareBuffers,
    first_message_opened: Callable[[], None],
    seen: FirstMessages | None = None,
) -> trio.abc.AsyncResource | str:
    """The Windows half's admission: the link to serve (sealed, or with no key the
    connection itself), else why not."""
    assert isinstance(stream, RawSocketStream)  # the Windows half listens on TCP
    try:
        peer = _peer_address(stream)
    except OSError as exc:  # reset while it waited to be accepted
        return f"it left before it was admitted ({exc.strerror or exc})"
    if peer not in allowed_peers:
        return f"{peer} is outside {allowed_peers}"
    if key is None:
        return stream
    return await accept_link(
        stream, key, scratch, first_message_opened, seen, describe_client_words
    )


def explain_handshake_failure(hop: Hop, failed: HandshakeFailed, fixes: LinkFixes) -> str:
    """The one line (what; fix) for a link whose handshake did not complete."""
    if isinstance(failed, NoHandshake):
        what, fix = explain_no_handshake(hop.endpoint, failed, fixes)
    elif isinstance(failed, WrongKey):
        what, fix = explain_wrong_key(hop.endpoint, fixes)
    elif isinstance(failed, InsecurePeer):
        what, fix = explain_insecure_windows_half(hop.endpoint, fixes)
    elif isinstance(failed, OtherVersion):
        what, fix = explain_other_version(hop.endpoint, failed, fixes)
    else:
        what, fix = f"{hop.name} at {hop.endpoint} failed the link handshake: {failed}", hop.fix
    return f"{what}; {fix}"


def authenticated_connector(
    hop: Hop, key: bytes, fixes: LinkFixes
) -> Callable[[], Awaitable[SealedLink]]:
    """The WSL2 half's links: connected, the key proven both ways, sealed."""
    connect = hop_connector(hop)
    scratch = new_scratch_buffers()
    opening = trio.CapacityLimiter(OPENING_AT_ONCE)

    async def connect_and_seal() -> SealedLink:
        async with opening:
            return await _connect_and_seal()

    async def _connect_and_seal() -> SealedLink:
        stream = await connect()
        assert isinstance(stream, RawSocketStream)  # the Windows half is a TCP hop
        try:
            return await open_link(stream, key, scratch)
        except (HandshakeFailed, *PEER_GONE) as exc:
            stream.close()
            failed = exc if isinstance(exc, HandshakeFailed) else NoHandshake(b"", 0)
            raise UpstreamUnavailable(explain_handshake_failure(hop, failed, fixes)) from exc
        except BaseException:  # cancelled: the half-made link goes with it
            stream.close()
            raise

    return connect_and_seal
