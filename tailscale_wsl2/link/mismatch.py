"""Who is on the other end of a link, told by what it said first, and the fix for each mismatch.

A half that meets the wrong peer must neither pass its bytes on as an answer nor blame the next
hop. The user needs to hear "the Windows half runs without the handshake", or "a web server holds
the port", with the command that fixes it. The WSL2 half's connector, its sessions and doctor all
ask this module, with the first bytes the peer sent (or none), so they name a mismatch in the same
words. It knows peers by those bytes alone, not by the handshake's cryptography, so it outlives a
change of handshake:

- a tailscale-wsl2 link message (`TSWSL`, then its version): a Windows half that expects the
  link handshake (its answer to a connection that starts without one, `KEY_EXPECTED`, or an
  older Windows half's hello);
- an HTTP answer: a web server, or (when it comes from Tailscale's LocalAPI or carries this
  program's name) a Windows half run with `--insecure-no-auth` that relayed a request;
- anything else: another program's own protocol (an SSH or mail banner, say);
- a close without a byte, or silence: nothing to tell, which the caller words for its case.

The Windows half has the mirror question, what a client sent instead of the handshake's answer:
`describe_client_words`.
"""

import enum
import re
from dataclasses import dataclass

from tailscale_wsl2.facts import PROGRAM
from tailscale_wsl2.link.handshake import LINK_VERSION, MAGIC, NoHandshake, OtherVersion
from tailscale_wsl2.link.sessions import SESSION_MODE
from tailscale_wsl2.net.endpoints import Endpoint, TcpEndpoint

__all__ = [
    "FirstWords",
    "LinkFixes",
    "Said",
    "classify_first_words",
    "describe_client_words",
    "explain_foreign",
    "explain_insecure_windows_half",
    "explain_no_handshake",
    "explain_other_version",
    "explain_out_of_step",
    "explain_unexpected_words",
    "explain_wrong_key",
]

# Enough of an answer to quote its status line and its Server header.
SAMPLE_BYTES = 1024
_HTTP_REQUEST = re.compile(rb"^[A-Z]{3,7} \S")


class Said(enum.Enum):
    HANDSHAKE = "handshake"  # a link message: a Windows half that expects the handshake
    HTTP = "http"  # an HTTP answer
    OTHER = "other"  # bytes of another protocol
    CLOSED = "closed"  # the connection closed before a byte
    NOTHING = "nothing"  # no byte in the time waited


@dataclass(frozen=True)
class FirstWords:
    """What a peer said first: its kind, and a sample of its bytes to quote."""

    said: Said
    sample: bytes = b""

    def http_header(self, name: str) -> str | None:
        """A header of an HTTP answer, as far as the sample holds it."""
        head = self.sample.partition(b"\r\n\r\n")[0].decode("latin-1")
        for line in head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    @property
    def from_this_program(self) -> bool:
        """An HTTP answer that only a Windows half run with --insecure-no-auth gives: the
        LocalAPI's own (it names its version), or the relay's 502 (it names this program)."""
        if self.said is not Said.HTTP:
            return False
        server = self.http_header("Server") or ""
        return self.http_header("Tailscale-Version") is not None or server.startswith(PROGRAM)

    def describe(self) -> str:
        """A few words for the user: what the peer looks like."""
        if self.said is Said.HANDSHAKE:
            return "it starts the tailscale-wsl2 link handshake"
        if self.said is Said.HTTP:
            status_line = self.sample.partition(b"\r\n")[0].decode("latin-1").strip()
            server = self.http_header("Server")
            return f"it answers HTTP ({status_line}{f', Server: {server}' if server else ''})"
        if self.said is Said.OTHER:
            return f"it sent {self.sample[:60]!r}"
        if self.said is Said.CLOSED:
            return "it closed the connection without a word"
        return "it says nothing"


def _starts_like(received: bytes, prefix: bytes) -> bool:
    """`received` begins with `prefix`, or is the beginning of it (a frame header is 4 bytes)."""
    return received.startswith(prefix) or prefix.startswith(received)


def classify_first_words(received: bytes | None) -> FirstWords:
    """What the peer said first: `received` is its first bytes, b"" when it closed the
    connection without one, None when it said nothing in the time waited."""
    if received is None:
        return FirstWords(Said.NOTHING)
    if not received:
        return FirstWords(Said.CLOSED)
    sample = received[:SAMPLE_BYTES]
    if _starts_like(received, MAGIC):
        return FirstWords(Said.HANDSHAKE, sample)
    if _starts_like(received, b"HTTP/"):
        return FirstWords(Said.HTTP, sample)
    return FirstWords(Said.OTHER, sample)


def describe_client_words(received: bytes) -> str | None:
    """Why a client's first bytes are no answer to the Windows half's handshake, where they
    say who the client is; None when they look like an answer (the handshake judges it)."""
    if received.startswith(SESSION_MODE):
        return (
            "it started a link without the handshake: the WSL2 half runs with "
            "--insecure-no-auth and this half without it"
        )
    if _HTTP_REQUEST.match(received):
        return (
            f"it sent an HTTP request ({received.partition(b' ')[0].decode()}), not the handshake"
        )
    return None


@dataclass(frozen=True)
class LinkFixes:
    """The commands the WSL2 half's fixes name, with the options the user gave
    (`plan.commands` makes them)."""

    windows_up: str  # start the Windows half, on Windows, as this half runs
    windows_up_with_key: str  # the same without --insecure-no-auth
    wsl_up: str  # start the WSL2 half, here
    wsl_up_with_key: str  # the same without --insecure-no-auth
    doctor: str  # doctor here
    windows_doctor: str  # doctor on Windows, for the same port


def _port(endpoint: Endpoint) -> str:
    return str(endpoint.port) if isinstance(endpoint, TcpEndpoint) else str(endpoint)


def explain_foreign(endpoint: Endpoint, words: FirstWords, fixes: LinkFixes) -> tuple[str, str]:
    """A program that is no half of tailscale-wsl2, described by what it said."""
    return (
        f"another program holds {endpoint}, not the Windows half of tailscale-wsl2: "
        f"{words.describe()}",
        f"stop it (`{fixes.windows_doctor}` on Windows names it), "
        "or run both halves with another --port",
    )


def explain_insecure_windows_half(endpoint: Endpoint, fixes: LinkFixes) -> tuple[str, str]:
    """A Windows half run with --insecure-no-auth, met by a half that expects the handshake."""
    return (
        f"the Windows half at {endpoint} runs with --insecure-no-auth, "
        "and this half expects the link handshake",
        f"restart it without --insecure-no-auth: `{fixes.windows_up_with_key}` on Windows",
    )


def explain_no_handshake(
    endpoint: Endpoint, failed: NoHandshake, fixes: LinkFixes
) -> tuple[str, str]:
    """What and fix, for a peer that gave no hello to a half that expects the handshake."""
    words = classify_first_words(failed.received)
    if words.said is Said.NOTHING:
        return (
            f"the Windows half at {endpoint} sent no link handshake within "
            f"{failed.waited:g}s: it runs with --insecure-no-auth, or another program holds "
            f"port {_port(endpoint)}",
            f"restart it without --insecure-no-auth: `{fixes.windows_up_with_key}` on Windows, "
            f"or stop the other program (`{fixes.doctor}` here tells which)",
        )
    if words.said is Said.CLOSED:
        return (
            f"the Windows half at {endpoint} closed the connection before the handshake: "
            "it serves another subnet",
            f"run `{fixes.windows_doctor}` on Windows: it shows the address it serves",
        )
    if words.said is Said.HTTP and words.from_this_program:
        return explain_insecure_windows_half(endpoint, fixes)
    return explain_foreign(endpoint, words, fixes)


def explain_other_version(
    endpoint: Endpoint, failed: OtherVersion, fixes: LinkFixes
) -> tuple[str, str]:
    """A Windows half of another link version: an older one speaks first, with its hello."""
    return (
        f"the Windows half at {endpoint} is {'an older' if failed.older else 'a newer'} "
        f"tailscale-wsl2 (link version {failed.version}; this half speaks {LINK_VERSION})",
        "upgrade both halves to the same release (README: Upgrade), then restart them: "
        f"`{fixes.windows_up}` on Windows, then `{fixes.wsl_up}` here",
    )


def explain_wrong_key(endpoint: Endpoint, fixes: LinkFixes) -> tuple[str, str]:
    return (
        f"the Windows half at {endpoint} refused the link key: the two halves use different keys",
        f"restart both so they read the same key: `{fixes.windows_up}` on Windows, "
        f"then `{fixes.wsl_up}` here",
    )


def explain_unexpected_words(
    endpoint: Endpoint, words: FirstWords, fixes: LinkFixes
) -> tuple[str, str]:
    """What and fix, for a half run with --insecure-no-auth whose peer said `words` first:
    a hello (the Windows half expects the handshake), or another program's bytes."""
    if words.said is Said.HANDSHAKE:
        return (
            f"the Windows half at {endpoint} expects the link handshake: it runs without "
            "--insecure-no-auth, and this half with it",
            f"restart this half without --insecure-no-auth: `{fixes.wsl_up_with_key}`",
        )
    return explain_foreign(endpoint, words, fixes)


def explain_out_of_step(endpoint: Endpoint, fixes: LinkFixes, received: bytes) -> str:
    """The one line for a link whose first bytes are no frame (`sessions.LinkOutOfStep`)."""
    what, fix = explain_unexpected_words(endpoint, classify_first_words(received), fixes)
    return f"{what}; {fix}"
