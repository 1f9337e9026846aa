"""The Windows .exe's version information and manifest (tools/windows_exe_resources.py).

The manifest is read back with PyInstaller's own merge (what EXE() embeds). PyInstaller's
version-file reader imports Windows-only modules, so here the version file is checked as the
expression it is; tests/in_wine/test_exe_resources.py reads it with PyInstaller's reader, and
the Windows CI job reads the built .exe's version information back."""

import ast
import importlib.util
import xml.dom.minidom
from pathlib import Path
from types import ModuleType

import pytest
from PyInstaller.utils.win32 import winmanifest

from tailscale_wsl2 import __version__
from tailscale_wsl2.facts import FIREWALL_RULE_NAME
from tests.support import ROOT


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "windows_exe_resources", ROOT / "tools" / "windows_exe_resources.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


resources = load_tool()


def test_the_version_comes_from_the_package() -> None:
    assert resources.read_version() == __version__


@pytest.mark.parametrize(
    ("version", "numbers"),
    [("0.1.0", (0, 1, 0, 0)), ("1.12", (1, 12, 0, 0)), ("2.3.4rc1", (2, 3, 4, 0))],
)
def test_file_version_numbers(version: str, numbers: tuple[int, int, int, int]) -> None:
    assert resources.file_version(version) == numbers


PYINSTALLER_VERSION_CLASSES = {
    "VSVersionInfo",
    "FixedFileInfo",
    "StringFileInfo",
    "StringTable",
    "StringStruct",
    "VarFileInfo",
    "VarStruct",
}


def test_the_version_file_is_an_expression_of_pyinstallers_classes(tmp_path: Path) -> None:
    version_file, _ = resources.write_resources(tmp_path)
    tree = ast.parse(version_file.read_text(encoding="utf-8"), mode="eval")
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    names = {node.func.id if isinstance(node.func, ast.Name) else "" for node in calls}
    assert names == PYINSTALLER_VERSION_CLASSES
    strings = {
        ast.literal_eval(call.args[0]): ast.literal_eval(call.args[1])
        for call in calls
        if isinstance(call.func, ast.Name) and call.func.id == "StringStruct"
    }
    assert strings["FileVersion"] == strings["ProductVersion"] == __version__
    assert strings["OriginalFilename"] == "tailscale-wsl2.exe"
    # The firewall prompt names its rules after this: it must not be `firewall add`'s rule.
    assert strings["FileDescription"] != FIREWALL_RULE_NAME


def test_the_manifest_runs_as_invoker_after_pyinstaller_merges_it(tmp_path: Path) -> None:
    _, manifest = resources.write_resources(tmp_path)
    merged = winmanifest.create_application_manifest(manifest.read_bytes(), False, False)
    document = xml.dom.minidom.parseString(merged)
    [level] = document.getElementsByTagName("requestedExecutionLevel")
    assert level.getAttribute("level") == "asInvoker"
    assert document.documentElement is not None
    [identity] = [
        node
        for node in document.documentElement.childNodes
        if isinstance(node, xml.dom.minidom.Element) and node.tagName == "assemblyIdentity"
    ]
    assert identity.getAttribute("version") == "0.1.0.0"
    assert identity.getAttribute("name") == "tailscale-wsl2"
