"""The open-file limit: let the relay's connection cap, not the default 1,024 descriptors, bind."""

import sys

__all__ = ["raise_open_file_limit"]


def raise_open_file_limit() -> None:
    """Let the connection cap, not the default 1024 descriptors, be the limit."""
    if sys.platform == "win32":
        return
    import resource  # noqa: PLC0415 (Unix only)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
