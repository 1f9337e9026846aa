"""The documents that describe the code must match it."""

import re

from tests.support import ROOT

PACKAGE = ROOT / "tailscale_wsl2"
DESIGN = ROOT / "docs" / "design.md"


def modules_in_tree() -> set[str]:
    return {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }


def modules_in_design_map() -> set[str]:
    text = DESIGN.read_text(encoding="utf-8")
    section = text[text.index("## Modules") : text.index("## Decisions")]
    named: set[str] = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            first_cell = row.split("|")[1]
            named.update(re.findall(r"`([\w/]+\.py)`", first_cell))
    return named


def test_the_design_module_map_names_every_module_and_no_other() -> None:
    tree, mapped = modules_in_tree(), modules_in_design_map()
    assert sorted(tree - mapped) == [], "modules missing from docs/design.md's map"
    assert sorted(mapped - tree) == [], "docs/design.md's map names modules that are gone"
