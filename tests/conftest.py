import sys

import pytest

from tests.support.chain import FROZEN_BINARY, module_program
from tests.support.ci import require

# tests/in_wine runs under a Windows Python (tools/winpy, driven by
# tests/end_to_end/test_in_wine_suite.py); collected here it would only show as skips.
collect_ignore = ["in_wine"] if sys.platform != "win32" else []


@pytest.fixture(params=["module", pytest.param("frozen", marks=pytest.mark.frozen)])
def program(request: pytest.FixtureRequest) -> list[str]:
    """The program under test: the package in this interpreter, or the frozen binary."""
    if request.param == "module":
        return module_program()
    require(FROZEN_BINARY.exists(), f"no frozen binary at {FROZEN_BINARY}: run `make build`")
    return [str(FROZEN_BINARY)]
