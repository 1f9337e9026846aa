import sys

import pytest

from tests.support.chain import FROZEN_BINARY, in_ci, module_program

# tests/in_wine runs under a Windows Python (tools/winpy, driven by
# test_windows_under_wine.py); collected here it would only show as skips.
collect_ignore = ["in_wine"] if sys.platform != "win32" else []


def require(condition: bool, reason: str) -> None:
    """Skip when a tool is missing, except in CI, where a missing tool is a failure."""
    if not condition:
        if in_ci():
            pytest.fail(f"{reason} (CI must have it: see `make test`)")
        pytest.skip(reason)


@pytest.fixture(params=["module", pytest.param("frozen", marks=pytest.mark.frozen)])
def program(request: pytest.FixtureRequest) -> list[str]:
    """The program under test: the package in this interpreter, or the frozen binary."""
    if request.param == "module":
        return module_program()
    require(FROZEN_BINARY.exists(), f"no frozen binary at {FROZEN_BINARY}: run `make build`")
    return [str(FROZEN_BINARY)]
