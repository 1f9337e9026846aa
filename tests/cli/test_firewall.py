"""`firewall add`'s consent to remove the Block rules Windows' prompt left: given in advance by
--remove-blocking, else asked on a terminal, else refused (never silent)."""

import io

import pytest
import typer

from tailscale_wsl2.cli.firewall import _consent
from tailscale_wsl2.windows.firewall_rules import parse_firewall_rules
from tests.support.doctor_fakes import fixture

RULES = parse_firewall_rules(fixture("windows/netsh-rules-prompt-blocks.txt"))[2:3]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_flag_consents_without_asking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(typer, "confirm", pytest.fail)
    assert _consent(remove_blocking=True)(RULES)


def test_without_a_terminal_the_answer_is_no(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(typer, "confirm", pytest.fail)
    monkeypatch.setattr("sys.stdin", io.StringIO())
    assert not _consent(remove_blocking=False)(RULES)


@pytest.mark.parametrize("answer", [True, False])
def test_on_a_terminal_the_user_is_asked(monkeypatch: pytest.MonkeyPatch, answer: bool) -> None:
    questions: list[str] = []

    def confirm(text: str, default: bool) -> bool:
        questions.append(text)
        assert default is False
        return answer

    monkeypatch.setattr(typer, "confirm", confirm)
    monkeypatch.setattr("sys.stdin", Terminal())
    assert _consent(remove_blocking=False)(RULES) is answer
    assert questions == [
        "Windows' firewall prompt left Block rules for this program that beat the new rule: "
        r"'tailscale-wsl2.exe' (C:\Users\me\Downloads\tailscale-wsl2.exe). Remove them?"
    ]
