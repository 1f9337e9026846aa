"""The link key as both sides' checks see it: `--insecure-no-auth`, or a key that loads.

The halves prove a shared key on every connection (`handshake.py`); doctor loads the same key
the same way (`link.key.load_key`), so its finding is exactly why `up` would fail: a missing,
unreadable or damaged file, or a path that is no regular file. Each side may word the fix with
its own commands (`fix_for`), so the command a user copies carries the options they gave.
"""

from collections.abc import Callable
from pathlib import Path

from tailscale_wsl2.doctor.model import Verdict, failure, ok, warning
from tailscale_wsl2.errors import ActionableError
from tailscale_wsl2.link.key import KeyFileError, load_key

__all__ = ["INSECURE", "load_link_key"]

INSECURE = warning(
    "no link key: --insecure-no-auth",
    "any program that can reach the Windows half may use this Windows user's Tailscale: "
    "run both halves without --insecure-no-auth",
)


def _always_made(path: Path) -> Verdict | None:
    return None


def _own_fix(exc: KeyFileError) -> str | None:
    return None


def load_link_key(
    path_of: Callable[[], Path],
    *,
    not_made_yet: Callable[[Path], Verdict | None] = _always_made,
    fix_for: Callable[[KeyFileError], str | None] = _own_fix,
) -> tuple[Verdict, bytes | None]:
    """The verdict on the key at `path_of()`, and the key where it loads. `not_made_yet` may
    answer first for a key that is missing but will be created (the Windows half's);
    `fix_for` may give a fix of its own for a key file's problem."""
    try:
        path = path_of()
        if (missing := not_made_yet(path)) is not None:
            return missing, None
        key = load_key(path)
    except KeyFileError as exc:
        return failure(exc.what, fix_for(exc) or exc.fix or "pass --key-file PATH"), None
    except ActionableError as exc:
        return failure(exc.what, exc.fix or "pass --key-file PATH"), None
    return ok(f"the link key is at {path}"), key
