"""Print the newest glibc symbol version a PyInstaller one-file ELF needs.

That is the oldest glibc the binary starts on. The bootloader is only part of
the answer: the shared libraries packed inside (libpython, extension modules)
are loaded after unpacking and may need a newer glibc, so they are read too.
"""

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from PyInstaller.archive.readers import CArchiveReader

GLIBC_VERSION = re.compile(rb"GLIBC_(\d+(?:\.\d+)+)")


def needed_versions(elf: Path) -> set[tuple[int, ...]]:
    dump = subprocess.run(["objdump", "-T", elf], capture_output=True, check=False).stdout
    return {tuple(map(int, v.split(b"."))) for v in GLIBC_VERSION.findall(dump)}


def main(binary: Path) -> None:
    versions = needed_versions(binary)
    archive = CArchiveReader(str(binary))
    with tempfile.TemporaryDirectory() as scratch:
        for index, name in enumerate(archive.toc):
            if ".so" in name:
                packed = Path(scratch) / str(index)
                packed.write_bytes(archive.extract(name) or b"")
                versions |= needed_versions(packed)
    newest = ".".join(map(str, max(versions)))
    print(f"{binary} needs glibc {newest} or newer")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
