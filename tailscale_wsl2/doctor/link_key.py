"""The link key as both sides' checks see it: `--insecure-no-auth`, or a key that loads.

The halves prove a shared key on every connection (`handshake.py`); doctor loads the same key
the same way (`linkkey.load_key`), so its finding is exactly why `up` would fail.
"""

from collections.abc import Callable
from pathlib import Path

from tailscale_wsl2.doctor.model import Verdict, failure, ok, warning
from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.link.key import load_key

__all__ = ["INSECURE", "load_link_key"]

INSECURE = warning(
    "no link key: --insecure-no-auth",
    "any program that can reach the Windows half may use this Windows user's Tailscale: "
    "run both halves without --insecure-no-auth",
)


def _always_made(path: Path) -> Verdict | None:
    return None


def load_link_key(
    path_of: Callable[[], Path],
    *,
    not_made_yet: Callable[[Path], Verdict | None] = _always_made,
) -> tuple[Verdict, bytes | None]:
    """The verdict on the key at `path_of()`, and the key where it loads. `not_made_yet` may
    answer first for a key that is missing but will be created (the Windows half's)."""
    try:
        path = path_of()
        if (missing := not_made_yet(path)) is not None:
            return missing, None
        key = load_key(path)
    except ActionableError as exc:
        return failure(exc.what, exc.fix or "pass --key-file PATH"), None
    return ok(f"the link key is at {path}"), key
