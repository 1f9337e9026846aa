"""Showing this side's log: the last lines across a rotation, and following it as it rotates."""

from pathlib import Path

from tailscale_wsl2.install.logs import follow_log, journal_argv, last_lines


def test_the_journal_is_asked_for_the_unit_s_lines() -> None:
    assert journal_argv("/usr/bin/journalctl", 20, follow=False) == [
        "/usr/bin/journalctl",
        "--unit",
        "tailscale-wsl2.service",
        "--lines",
        "20",
        "--no-pager",
    ]
    assert journal_argv("/bin/journalctl", 5, follow=True)[-1] == "--follow"


def test_the_last_lines_span_the_newest_older_file(tmp_path: Path) -> None:
    log = tmp_path / "tailscale-wsl2.log"
    Path(f"{log}.2").write_text("a\nb\n")
    Path(f"{log}.1").write_text("c\nd\n")
    log.write_text("e\n")
    assert last_lines(log, 1) == ["e"]
    assert last_lines(log, 3) == ["c", "d", "e"]
    assert last_lines(log, 10) == ["a", "b", "c", "d", "e"]
    assert last_lines(log, 0) == []
    assert last_lines(tmp_path / "missing.log", 5) == []


class Script:
    """Plays what happens to the log between the follower's looks."""

    def __init__(self, log: Path, steps: list[str | None]) -> None:
        self.log = log
        self.steps = steps  # text to append, or None: rotate

    def sleep(self, seconds: float) -> None:
        step = self.steps.pop(0)
        if step is None:
            self.log.rename(f"{self.log}.1")
            self.log.write_text("")
        else:
            with self.log.open("a") as out:
                out.write(step)

    def keep_going(self) -> bool:
        return bool(self.steps)


def test_following_shows_whole_new_lines_and_survives_rotation(tmp_path: Path) -> None:
    log = tmp_path / "tailscale-wsl2.log"
    log.write_text("old line, already shown\n")
    shown: list[str] = []
    script = Script(log, ["one\ntw", "o\n", None, "after rotation\n"])
    follow_log(log, shown.append, script.sleep, script.keep_going)
    assert "".join(shown) == "one\ntwo\nafter rotation\n"
