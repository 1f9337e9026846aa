"""docs/doctor.md lists every line doctor's checks print, word for word.

The findings are read from the source, not from a list kept by hand: every `ok(...)`,
`warning(...)`, `failure(...)` and `Verdict(...)` in the check modules, and the messages the
checks pass on from the modules they call (the key file's, planning's, the link's mismatch
explanations). A finding is a string or an f-string; each `{...}` in it is a placeholder, which
the document may name as it likes (`{path}`, `{address}`), while every other character must be
there as printed. A finding whose words cannot be read from the source (an error passed on
from elsewhere) must be one of the few listed in `PASSED_ON`, so a new one cannot slip by.
"""

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass

from tests.support import ROOT

PACKAGE = ROOT / "tailscale_wsl2"
DOCTOR_MD = ROOT / "docs" / "doctor.md"

# Modules whose verdict constructors are the checks' findings.
CHECK_MODULES = [
    "doctor/wsl_checks.py",
    "doctor/windows_checks.py",
    "doctor/link_key.py",
    "doctor/localapi.py",
    "doctor/model.py",
]
# Modules whose errors a check prints as its finding: (module, constructor, index of `what`).
PASSED_ON_MODULES = [
    ("link/key.py", "ActionableError", 0),
    ("link/key.py", "KeyFileError", 1),
    ("plan/halves.py", "ActionableError", 0),
    ("plan/lookups.py", "ActionableError", 0),
    ("wsl/discovery.py", "ActionableError", 0),
]
VERDICT_MAKERS = {"ok": 0, "warning": 0, "failure": 0, "Verdict": 1}
# Findings made elsewhere, by the function that passes them on, and where their words are read.
PASSED_ON = {
    ("doctor/wsl_checks.py", "check_host_address", "exc.what"): "planning's errors",
    ("doctor/windows_checks.py", "check_wsl_adapter", "exc.what"): "planning's errors",
    ("doctor/link_key.py", "load_link_key", "exc.what"): "the key file's errors",
    ("doctor/localapi.py", "_state_verdict", "status.describe()"): "the daemon's status",
    ("doctor/wsl_checks.py", "_check_insecure_windows_half", "what"): "link/mismatch.py",
    (
        "doctor/wsl_checks.py",
        "_check_insecure_windows_half",
        "*explain_unexpected_words",
    ): "link/mismatch.py",
    ("doctor/wsl_checks.py", "_no_handshake", "*explain_no_handshake"): "link/mismatch.py",
    ("doctor/wsl_checks.py", "_no_handshake", "*explain_insecure_windows_half"): "link/mismatch",
    ("doctor/wsl_checks.py", "_no_handshake", "*explain_foreign"): "link/mismatch.py",
    ("doctor/wsl_checks.py", "_handshake_failed", "*explain_wrong_key"): "link/mismatch.py",
    ("doctor/windows_checks.py", "check_firewall", "*problem"): "windows/firewall.py",
    (
        "doctor/wsl_checks.py",
        "_handshake_failed",
        "*explain_insecure_windows_half",
    ): "link/mismatch.py",
    ("doctor/wsl_checks.py", "_handshake_failed", "*explain_other_version"): "link/mismatch.py",
}
# Modules whose functions return (what, fix) pairs that a check prints: (module, name prefixes).
PAIR_MODULES = [
    ("link/mismatch.py", ("explain",)),
    ("windows/firewall.py", ("coverage_problem", "_blocked_problem", "_prompt_rules_problem")),
]
# The verdict constructors themselves take the finding as a parameter.
CONSTRUCTORS = {("doctor/model.py", name) for name in ("ok", "warning", "failure")}


@dataclass(frozen=True)
class Finding:
    module: str
    function: str
    template: str | None  # None: made elsewhere (`source` says what)
    source: str


def _template(node: ast.expr) -> str | None:
    """A string's words, or an f-string's with `{...}` for each value; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if not isinstance(node, ast.JoinedStr):
        return None
    words = []
    for part in node.values:
        if isinstance(part, ast.Constant):
            words.append(str(part.value))
        else:
            assert isinstance(part, ast.FormattedValue)
            placeholder = "{" + ast.unparse(part.value) + "}"
            # !r quotes a string: the document shows the quotes.
            words.append(f"'{placeholder}'" if part.conversion == ord("r") else placeholder)
    return "".join(words)


def _assigned(name: str, scope: ast.AST) -> ast.expr | None:
    """What `name` is assigned in `scope` (`finding = f"..."`), if it is assigned once."""
    values = [
        node.value
        for node in ast.walk(scope)
        if isinstance(node, ast.Assign)
        and any(isinstance(target, ast.Name) and target.id == name for target in node.targets)
    ]
    return values[0] if len(values) == 1 else None


def _finding(module: str, function: str, node: ast.expr, scope: ast.AST) -> Finding:
    value = _assigned(node.id, scope) if isinstance(node, ast.Name) else node
    template = _template(value) if value is not None else None
    if template is not None:
        return Finding(module, function, template, "")
    source = ast.unparse(node)
    if isinstance(node, ast.Starred):  # failure(*explain_...(...)): the function's name
        source = "*" + ast.unparse(node.value).partition("(")[0]
    return Finding(module, function, None, source)


def _functions(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef | ast.Module]:
    yield tree
    yield from (
        node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    )


def _own_nodes(scope: ast.AST) -> Iterator[ast.AST]:
    """The nodes of `scope` outside the functions defined in it (those are scopes of their own)."""
    for child in ast.iter_child_nodes(scope):
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield child
            yield from _own_nodes(child)


def _calls(module: str, makers: dict[str, int]) -> Iterator[Finding]:
    tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
    for scope in _functions(tree):
        name = getattr(scope, "name", "<module>")
        if (module, name) in CONSTRUCTORS:
            continue
        for call in _own_nodes(scope):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
                continue
            index = makers.get(call.func.id)
            if index is not None and len(call.args) > index:
                yield _finding(module, name, call.args[index], scope)


def _pair_findings(module: str, prefixes: tuple[str, ...]) -> Iterator[Finding]:
    """The first of each (what, fix) pair the functions of `module` named with `prefixes` make
    (link/mismatch.py's explanations, windows/firewall.py's coverage problems)."""
    tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
    for function in ast.walk(tree):
        if not (isinstance(function, ast.FunctionDef) and function.name.startswith(prefixes)):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Return | ast.Assign) and isinstance(node.value, ast.Tuple):
                yield _finding(module, function.name, node.value.elts[0], function)


def collect_findings() -> list[Finding]:
    found: list[Finding] = []
    for module in CHECK_MODULES:
        found += _calls(module, VERDICT_MAKERS)
    for module, constructor, index in PASSED_ON_MODULES:
        found += _calls(module, {constructor: index})
    for module, prefixes in PAIR_MODULES:
        found += _pair_findings(module, prefixes)
    return found


def _normalised(text: str) -> str:
    return " ".join(text.split())


def pattern(template: str) -> re.Pattern[str]:
    """The template as the document must show it: its words exactly, any name in braces."""
    parts = re.split(r"\{[^{}]*\}", _normalised(template))
    return re.compile(r"\{[^{}]+\}".join(re.escape(part) for part in parts))


def documented(template: str, document: str) -> bool:
    return pattern(template).search(_normalised(document)) is not None


def test_every_finding_doctor_prints_is_in_docs_doctor_md() -> None:
    document = DOCTOR_MD.read_text(encoding="utf-8")
    templates = {found.template for found in collect_findings() if found.template}
    missing = sorted(template for template in templates if not documented(template, document))
    assert missing == [], "findings that docs/doctor.md does not list, word for word"


def test_findings_passed_on_from_elsewhere_are_the_known_ones() -> None:
    passed_on = {
        (found.module, found.function, found.source)
        for found in collect_findings()
        if found.template is None
    }
    assert passed_on == set(PASSED_ON)


def test_the_collection_reads_the_checks() -> None:
    # A collector broken into finding nothing would pass the test above vacuously.
    templates = {found.template for found in collect_findings() if found.template}
    assert len(templates) > 80
    assert "no socket at {path}" in templates
    assert "no link key at {path}" in templates  # passed on from link/key.py
    assert "no firewall rule allows {traffic}" in templates  # from windows/firewall.py
    assert "the firewall rule '{coverage.rule}' allows TCP {port} from {subnet}" in templates
    assert (
        "the Windows half at {endpoint} runs with --insecure-no-auth, and this half expects "
        "the link handshake"
    ) in templates


def test_a_changed_word_is_caught_and_placeholders_may_be_named_freely() -> None:
    document = "- **failure**: `no socket at {the path}`, and `cannot connect to\n  {x}: {y}`"
    assert documented("no socket at {path}", document)
    assert documented("cannot connect to {path}: {failed.reason}", document)
    assert not documented("no socket found at {path}", document)
    assert not documented("no sockets at {path}", document)
    assert not documented("cannot connect to {path} - {reason}", document)
