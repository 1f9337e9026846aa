"""Tests that need a system tool skip without it, except in CI, where they fail instead.

CI must run them (a skipped check there would pass unnoticed); a developer's machine may lack
the tool.
"""

import os

import pytest

__all__ = ["in_ci", "require"]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip when `condition` is false, or fail when running in CI."""
    if not condition:
        if in_ci():
            pytest.fail(f"{reason} (CI must have it: see `make test`)")
        pytest.skip(reason)
