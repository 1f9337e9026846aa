"""The one error family the program prints as a single line.

Anything raised as `ActionableError` is a condition the user can fix; the CLI
prints it as one line (what happened, then what to do) and exits 1. Every other
exception is a bug and keeps its traceback.
"""

__all__ = ["ActionableError"]


class ActionableError(Exception):
    """A failure the user can act on: `what` happened; `fix` says what to do."""

    def __init__(self, what: str, fix: str | None = None) -> None:
        super().__init__(what, fix)
        self.what = what
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.what}; {self.fix}" if self.fix else self.what
