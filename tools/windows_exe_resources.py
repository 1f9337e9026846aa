"""What the Windows .exe carries besides the program: version information and its manifest.

Why: an executable without version information and a manifest looks like what unsigned
droppers look like, to SmartScreen's reputation and to antivirus heuristics alike; with them,
Windows' file properties, Task Manager and the firewall name the program properly.

- The version information is generated from `tailscale_wsl2.__version__`, read from the
  source (never imported: build.spec runs this inside PyInstaller, on any platform), in the
  text form PyInstaller's `EXE(version=...)` reads back (`VSVersionInfo(...)`).
- The manifest asks for `asInvoker`: the Windows half runs as the logged-in user, never
  elevated (Tailscale's daemon answers a second user with 401, and an elevated relay would
  be one); declares Windows 10 and 11; and makes long paths work.

The FileDescription is not the firewall rule's name: Windows names the rules its first-listen
prompt makes after the program's description, and `firewall add` and `remove` select their
own rule by `FIREWALL_RULE_NAME`, which such a prompt rule must never share.

`python tools/windows_exe_resources.py DIR` writes both files into DIR (build.spec does the
same through `write_resources`).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

__all__ = [
    "MANIFEST",
    "file_version",
    "read_version",
    "version_file_text",
    "write_resources",
]

ROOT = Path(__file__).resolve().parents[1]

PRODUCT = "tailscale-wsl2"
DESCRIPTION = "Tailscale from WSL2: relay to Tailscale's LocalAPI"

# Windows 10 and 11 share one supportedOS id; asInvoker: never ask for elevation.
MANIFEST = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<assembly xmlns="urn:schemas-microsoft-com:asm.v1" manifestVersion="1.0">
  <assemblyIdentity type="win32" name="tailscale-wsl2" version="{version}"
                    processorArchitecture="amd64"/>
  <description>{description}</description>
  <trustInfo xmlns="urn:schemas-microsoft-com:asm.v3">
    <security>
      <requestedPrivileges>
        <requestedExecutionLevel level="asInvoker" uiAccess="false"/>
      </requestedPrivileges>
    </security>
  </trustInfo>
  <compatibility xmlns="urn:schemas-microsoft-com:compatibility.v1">
    <application>
      <supportedOS Id="{{8e0f7a12-bfb3-4fe8-b9a5-48fd50a15a9a}}"/>
    </application>
  </compatibility>
  <application xmlns="urn:schemas-microsoft-com:asm.v3">
    <windowsSettings>
      <longPathAware xmlns="http://schemas.microsoft.com/SMI/2016/WindowsSettings">true</longPathAware>
    </windowsSettings>
  </application>
</assembly>
"""


def read_version(root: Path = ROOT) -> str:
    """`__version__` as tailscale_wsl2/__init__.py assigns it."""
    tree = ast.parse((root / "tailscale_wsl2" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__version__" for target in node.targets
        ):
            value = ast.literal_eval(node.value)
            if isinstance(value, str):
                return value
    raise ValueError("tailscale_wsl2/__init__.py assigns no __version__ string")


def file_version(version: str) -> tuple[int, int, int, int]:
    """The four numbers Windows shows for `version`: "1.2.3" -> (1, 2, 3, 0); a suffix such
    as "rc1" is dropped (it stays in the version strings)."""
    release = version.split("+", maxsplit=1)[0]
    numbers = [int(part) for part in re.findall(r"\d+", release)[:3]]
    if not numbers:
        raise ValueError(f"no version number in {version!r}")
    padded = [*numbers, 0, 0, 0, 0][:4]
    return padded[0], padded[1], padded[2], padded[3]


def version_file_text(version: str) -> str:
    """The version information for PyInstaller's `EXE(version=...)`."""
    numbers = file_version(version)
    strings = {
        "CompanyName": PRODUCT,
        "FileDescription": DESCRIPTION,
        "FileVersion": version,
        "InternalName": PRODUCT,
        "LegalCopyright": "MIT License, the tailscale-wsl2 authors",
        "OriginalFilename": f"{PRODUCT}.exe",
        "ProductName": PRODUCT,
        "ProductVersion": version,
    }
    string_structs = ",\n".join(
        f"          StringStruct({key!r}, {value!r})" for key, value in strings.items()
    )
    # 0x40004: VOS_NT_WINDOWS32; 0x1: VFT_APP. 040904B0 and [1033, 1200]: US English, Unicode.
    return f"""VSVersionInfo(
  ffi=FixedFileInfo(
    filevers={numbers},
    prodvers={numbers},
    mask=0x3F,
    flags=0x0,
    OS=0x40004,
    fileType=0x1,
    subtype=0x0,
    date=(0, 0),
  ),
  kids=[
    StringFileInfo(
      [
        StringTable(
          '040904B0',
          [
{string_structs},
          ],
        )
      ]
    ),
    VarFileInfo([VarStruct('Translation', [1033, 1200])]),
  ],
)
"""


def write_resources(directory: Path, root: Path = ROOT) -> tuple[Path, Path]:
    """Write the version file and the manifest into `directory`; their paths."""
    version = read_version(root)
    directory.mkdir(parents=True, exist_ok=True)
    version_file = directory / "windows-version.txt"
    manifest = directory / "windows.manifest"
    version_file.write_text(version_file_text(version), encoding="utf-8")
    dotted = ".".join(map(str, file_version(version)))
    manifest.write_text(MANIFEST.format(version=dotted, description=DESCRIPTION), "utf-8")
    return version_file, manifest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tools/windows_exe_resources.py DIR")
    for path in write_resources(Path(sys.argv[1])):
        print(path)
