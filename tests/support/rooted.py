"""install's `System` seam on a temporary root: files land under it, commands are recorded and
never run. Tests of the commands use it so that nothing touches this machine's /etc, /usr or
systemd, and so that "nothing of the user's lost" can be checked byte for byte."""

from collections.abc import Sequence
from pathlib import Path

from tailscale_wsl2.install.apply import LocalSystem

__all__ = ["RootedSystem"]


class RootedSystem:
    def __init__(self, root: Path, statuses: dict[str, int] | None = None) -> None:
        self.root = root
        self.commands: list[tuple[str, ...]] = []
        self.statuses = statuses or {}
        self._local = LocalSystem()

    def at(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def read_bytes(self, path: str) -> bytes | None:
        try:
            return self.at(path).read_bytes()
        except FileNotFoundError:
            return None

    def snapshot(self) -> dict[str, bytes]:
        """Every file under the root, by its path on the machine it stands for."""
        return {
            "/" + str(path.relative_to(self.root)): path.read_bytes()
            for path in sorted(self.root.rglob("*"))
            if path.is_file()
        }

    def write(self, path: str, data: bytes, mode: int) -> None:
        self._local.write(str(self.at(path)), data, mode)

    def copy(self, source: str, destination: str, mode: int) -> None:
        self._local.copy(source, str(self.at(destination)), mode)

    def copy_windowless(self, source: str, destination: str, mode: int) -> None:
        self._local.copy_windowless(source, str(self.at(destination)), mode)

    def remove(self, path: str) -> None:
        self._local.remove(str(self.at(path)))

    def remove_directory(self, path: str) -> None:
        self._local.remove_directory(str(self.at(path)))

    def run(self, argv: Sequence[str]) -> int:
        self.commands.append(tuple(argv))
        return self.statuses.get(argv[-1], 0)

    def run_elevated(self, argv: Sequence[str]) -> int | None:
        self.commands.append(("elevated", *argv))
        return 0
