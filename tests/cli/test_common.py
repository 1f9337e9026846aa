"""When the commands colour their output: a person at a terminal who did not say no."""

import io

import pytest

from tailscale_wsl2.cli.common import wants_colour


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_on_a_terminal() -> None:
    assert wants_colour(False, {}, Terminal())
    # no-color.org: only a NO_COLOR that is set and not empty turns colour off.
    assert wants_colour(False, {"NO_COLOR": "", "TERM": "xterm-256color"}, Terminal())


def test_no_colour_when_piped() -> None:
    assert not wants_colour(False, {}, io.StringIO())


@pytest.mark.parametrize(
    ("no_color", "environ"),
    [(True, {}), (False, {"NO_COLOR": "1"}), (False, {"NO_COLOR": "0"}), (False, {"TERM": "dumb"})],
)
def test_no_colour_when_told_so(no_color: bool, environ: dict[str, str]) -> None:
    assert not wants_colour(no_color, environ, Terminal())
