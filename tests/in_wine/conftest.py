"""Set-up for the Windows test suite, run under Wine by `tools/winpy -m pytest tests/in_wine`.

Under Wine, trio's IOCP loop cannot start without tools/wine_trio_patch.py (Wine 8.0 lacks
SIO_BSP_HANDLE_SELECT). That patch is test-only, so it lives in tools/ rather than in the
shipped package, and it is loaded from its path here before any test calls `trio.run`. The
patch does nothing on Linux or on real Windows.
"""

from __future__ import annotations

from tests.in_wine.wine_main import apply_wine_trio_patch

apply_wine_trio_patch()
