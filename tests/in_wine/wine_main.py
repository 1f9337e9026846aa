"""Run a module as `python -m MODULE ARGS...` would, after applying the Wine trio patch.

Why: the product's own entry point (`python -m tailscale_wsl2`) cannot start trio's IOCP loop
under Wine 8.0 without tools/wine_trio_patch.py, and that patch must never ship in the package.
So the end-to-end tests run the Windows half as
`tools/winpy -m tests.in_wine.wine_main tailscale_wsl2 up --side windows ...`: this module
applies the patch (a no-op outside Wine) and hands over to the real entry point, unchanged.
"""

from __future__ import annotations

import functools
import importlib.util
import runpy
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["apply_wine_trio_patch", "main", "running_under_wine"]

# The same file tests/in_wine/conftest.py loads: tools/ is not a package, so load it by path.
_PATCH_PATH = Path(__file__).resolve().parents[2] / "tools" / "wine_trio_patch.py"


@functools.cache
def _patch_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wine_trio_patch", _PATCH_PATH)
    assert spec is not None
    assert spec.loader is not None
    patch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(patch)
    return patch


def apply_wine_trio_patch() -> None:
    _patch_module().patch_trio_for_wine()


def running_under_wine() -> bool:
    """Whether this Windows Python runs under Wine (tests say what Wine does differently)."""
    return bool(_patch_module().running_under_wine())


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m tests.in_wine.wine_main MODULE [ARGS...]")
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    apply_wine_trio_patch()
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
