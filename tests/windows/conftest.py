"""Set-up for the Windows test suite, run under Wine by `tools/winpy -m pytest tests/windows`.

Under Wine, trio's IOCP loop cannot start without tools/wine_trio_patch.py (Wine 8.0 lacks
SIO_BSP_HANDLE_SELECT). That patch is test-only, so it lives in tools/ rather than in the
shipped package, and it is loaded from its path here before any test calls `trio.run`. The
patch does nothing on Linux or on real Windows.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATCH_PATH = Path(__file__).resolve().parents[2] / "tools" / "wine_trio_patch.py"


def _apply_wine_trio_patch() -> None:
    spec = importlib.util.spec_from_file_location("wine_trio_patch", _PATCH_PATH)
    assert spec is not None
    assert spec.loader is not None
    patch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(patch)
    patch.patch_trio_for_wine()


_apply_wine_trio_patch()
