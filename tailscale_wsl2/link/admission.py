"""The link between the halves, as each half's relay sees it.

The Windows half admits a connection only from the subnet it serves (the WSL
adapter's, or loopback) and only after the handshake proves the link key; the
WSL2 half's connector opens the Windows half and proves the key before the
first client byte flows. `--insecure-no-auth` leaves the handshake out on both
sides (the subnet check stays).

A failed handshake is told apart from a mismatch (`mismatch.py`): a peer that is
no Windows half expecting the handshake (one run with `--insecure-no-auth`, a
web server) is named as such, with the fix, in the line the client gets.
"""

import ipaddress

import trio

from tailscale_wsl2.link.handshake import (
    HandshakeFailed,
    NoHandshake,
    WrongKey,
    challenge_client,
    prove_key,
)
from tailscale_wsl2.link.mismatch import (
    LinkFixes,
    describe_client_words,
    explain_no_handshake,
    explain_wrong_key,
)
from tailscale_wsl2.net.connect import Connector, Hop, UpstreamUnavailable, hop_connector
from tailscale_wsl2.net.endpoints import IPNetwork
from tailscale_wsl2.net.sockets import PEER_GONE, RawSocketStream

__all__ = ["admit_windows_peer", "authenticated_connector", "explain_handshake_failure"]


def _peer_address(stream: trio.abc.Stream) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    assert isinstance(stream, RawSocketStream)  # the Windows half listens on TCP
    return ipaddress.ip_address(stream.socket.getpeername()[0])


async def admit_windows_peer(
    stream: trio.abc.Stream, allowed_peers: IPNetwork, key: bytes | None
) -> str | None:
    """The Windows half's admission: None for a peer it may serve, else why not."""
    peer = _peer_address(stream)
    if peer not in allowed_peers:
        return f"{peer} is outside {allowed_peers}"
    if key is None:
        return None
    reason = await challenge_client(stream, key, describe_first_bytes=describe_client_words)
    return f"{peer}: {reason}" if reason else None


def explain_handshake_failure(hop: Hop, failed: HandshakeFailed, fixes: LinkFixes) -> str:
    """The one line (what; fix) for a link the Windows half did not accept."""
    if isinstance(failed, NoHandshake):
        what, fix = explain_no_handshake(hop.endpoint, failed, fixes)
    elif isinstance(failed, WrongKey):
        what, fix = explain_wrong_key(hop.endpoint, fixes)
    else:
        what, fix = f"{hop.name} at {hop.endpoint} refused the link: {failed}", hop.fix
    return f"{what}; {fix}"


def authenticated_connector(hop: Hop, key: bytes, fixes: LinkFixes) -> Connector:
    connect = hop_connector(hop)

    async def connect_and_prove_key() -> trio.abc.Stream:
        stream = await connect()
        try:
            await prove_key(stream, key)
        except (HandshakeFailed, *PEER_GONE) as exc:
            await stream.aclose()
            failed = exc if isinstance(exc, HandshakeFailed) else NoHandshake(b"", 0)
            raise UpstreamUnavailable(explain_handshake_failure(hop, failed, fixes)) from exc
        return stream

    return connect_and_prove_key
