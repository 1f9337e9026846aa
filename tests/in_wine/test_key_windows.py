"""The link key's lockdown with the real Win32 calls (under Wine; natively in the Windows job).

The user's SID comes from this process's token through ctypes; it must be the SID a pipe
server sees for this process (the same token), and `load_or_create_key` must run the real
icacls with it and succeed. Wine's icacls is a stub that changes nothing and exits 0, so the
ACL itself is read back only on real Windows (tests/windows_ci/e2e.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform != "win32", reason="Windows only (run: tools/winpy -m pytest tests/in_wine)"
)

if sys.platform == "win32":
    from tailscale_wsl2.link.key import current_user_sid, load_key, load_or_create_key
    from tailscale_wsl2.net._windows_pipe import open_named_pipe
    from tests.in_wine.test_pipe_identity import exchange

# Everything below is Windows-only: mypy checks it with --platform win32.
assert sys.platform == "win32" or not TYPE_CHECKING


async def test_the_sid_is_the_one_a_pipe_server_sees_for_this_process() -> None:
    sid = current_user_sid()
    assert sid.startswith("S-1-5-")
    _, [identity] = await exchange(open_named_pipe)
    assert identity.user_sid == sid


def test_a_new_key_is_made_with_the_real_icacls(tmp_path: Path) -> None:
    path = tmp_path / "tailscale-wsl2" / "link.key"
    key = load_or_create_key(path)
    assert load_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["link.key"]
