"""The layout contract: imports between the packages go one way, and no package has an import cycle.

    rims_core <- rllib_models <- sweeps <- rims_cli        (A <- B: B may import A, and what A may import)
    sweeps.keys <- analysis <- rims_cli

Every ``import`` and ``from ... import`` of every module is read with ``ast``, at module level and inside
functions alike (a lazy import is still a dependency), ``if TYPE_CHECKING:`` blocks included. Cycles are looked
for among the files of each package, over the imports that run when a module loads (module level, class bodies;
not function bodies, not TYPE_CHECKING blocks). The README's Layout section states the same rule; a test checks
that the two agree. Imports spelled as strings (importlib.import_module) are not seen.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rims_core", "rllib_models", "sweeps", "analysis", "rims_cli")
# package -> what of the other packages it may import (a package, or one module of it: sweeps.keys)
ALLOWED: dict[str, set[str]] = {
    "rims_core": set(),
    "rllib_models": {"rims_core"},
    "sweeps": {"rims_core", "rllib_models"},
    "analysis": {"sweeps.keys"},
    "rims_cli": {"rims_core", "rllib_models", "sweeps", "analysis"},
}


@dataclass(frozen=True)
class Import:
    """One imported module: ``target`` (absolute dotted name), where (file relative to the root, line), the
    statement as written, and whether it runs when the importing module loads (``at_load``)."""

    target: str
    file: str
    line: int
    text: str
    at_load: bool


def module_name(path: Path, root: Path) -> str:
    """sweeps/tracking/__init__.py -> sweeps.tracking; sweeps/local.py -> sweeps.local."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _visit(node: ast.AST, at_load: bool, found: list[tuple[ast.Import | ast.ImportFrom, bool]]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            found.append((child, at_load))
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            _visit(child, False, found)
        elif isinstance(child, ast.If) and _is_type_checking(child):
            for stmt in child.body:
                _visit(ast.Module(body=[stmt], type_ignores=[]), False, found)
            for stmt in child.orelse:
                _visit(ast.Module(body=[stmt], type_ignores=[]), at_load, found)
        else:
            _visit(child, at_load, found)


def imports_of(path: Path, root: Path) -> list[Import]:
    """Every module that path's imports name, resolved to absolute names. ``from P import x`` names P.x when x is a
    module or package under root (a submodule import), else P."""
    source_text = path.read_text()
    tree = ast.parse(source_text, filename=str(path))
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []
    _visit(tree, True, found)
    out = []
    rel = str(path.relative_to(root))
    for node, at_load in found:
        text = ast.get_source_segment(source_text, node) or ast.unparse(node)
        if isinstance(node, ast.Import):
            out += [Import(a.name, rel, node.lineno, text, at_load) for a in node.names]
            continue
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        for a in node.names:
            sub = f"{source}.{a.name}"
            is_module = (root / sub.replace(".", "/")).with_suffix(".py").is_file() or (
                root / sub.replace(".", "/") / "__init__.py").is_file()
            out.append(Import(sub if is_module else source, rel, node.lineno, text, at_load))
    return list(dict.fromkeys(out))  # `from P import a, b` names P once


def modules(package: str, root: Path = ROOT) -> list[Path]:
    return sorted(p for p in (root / package).rglob("*.py") if "__pycache__" not in p.parts)


def _within(target: str, name: str) -> bool:
    return target == name or target.startswith(name + ".")


def forbidden_imports(package: str, allowed: dict[str, set[str]], root: Path = ROOT) -> list[str]:
    """One line per import of another package of ``allowed`` that ``package`` may not make:
    ``file:line: `statement` imports X; package may import only ...``."""
    others = [p for p in allowed if p != package]
    may = f"only {', '.join(sorted(allowed[package]))}" if allowed[package] else "none of the other packages"
    bad = []
    for path in modules(package, root):
        for imp in imports_of(path, root):
            if not any(_within(imp.target, o) for o in others):
                continue
            if not any(_within(imp.target, a) for a in allowed[package]):
                bad.append(f"{imp.file}:{imp.line}: `{imp.text}` imports {imp.target}; {package} may import {may}")
    return bad


def import_cycles(package: str, root: Path = ROOT) -> list[str]:
    """The cycles among package's files over their load-time imports, each as ``a -> b (file:line) -> ... -> a``
    (one per strongly connected component of the file graph)."""
    names = {module_name(p, root): p for p in modules(package, root)}
    edges: dict[str, dict[str, Import]] = {n: {} for n in names}
    for name, path in names.items():
        for imp in imports_of(path, root):
            if imp.at_load and imp.target in names and imp.target != name:
                edges[name].setdefault(imp.target, imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    sccs: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan; the graphs are small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(names):
        if v not in index:
            strongconnect(v)
    out = []
    for comp in sccs:
        members = set(comp)
        path, seen = [comp[0]], {comp[0]}
        while True:  # walk inside the component until a module repeats: one concrete cycle to show
            nxt = next(w for w in sorted(edges[path[-1]]) if w in members)
            if nxt in seen:
                cycle = [*path[path.index(nxt):], nxt]
                break
            path.append(nxt)
            seen.add(nxt)
        hops = [f"{a} -> {b} ({edges[a][b].file}:{edges[a][b].line})" for a, b in pairwise(cycle)]
        out.append(f"cycle among {', '.join(comp)}: " + "; ".join(hops))
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_go_one_way(package):
    bad = forbidden_imports(package, ALLOWED)
    assert not bad, f"{len(bad)} imports against the layout (README, Layout):\n" + "\n".join(bad)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_within_a_package(package):
    cycles = import_cycles(package)
    assert not cycles, "\n".join(cycles)


def test_sweeps_keys_is_standard_library_only():
    """analysis may import sweeps.keys: loading it (and sweeps/__init__.py) must not load the rest of sweeps,
    nor anything outside the standard library."""
    bad = [f"{i.file}:{i.line}: `{i.text}` imports {i.target}, not in the standard library"
           for f in ("sweeps/__init__.py", "sweeps/keys.py") for i in imports_of(ROOT / f, ROOT)
           if i.target.split(".")[0] not in sys.stdlib_module_names and i.target != "__future__"]
    assert not bad, "\n".join(bad)


def readme_rule(text: str) -> dict[str, set[str]]:
    """The import rule the README's Layout section states, from its arrow chains (`a <- b <- c`: b may import a,
    c may import b and a)."""
    section = text.split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    rule: dict[str, set[str]] = {}
    for chain in re.findall(r"`([\w.]+(?: <- [\w.]+)+)`", section):
        parts = chain.split(" <- ")
        for i, name in enumerate(parts):
            rule.setdefault(name, set()).update(parts[:i])
    return rule


def _closure(allowed: dict[str, set[str]]) -> dict[str, set[str]]:
    """ALLOWED as the README writes it: a package's entry lists sweeps.keys when it may import all of sweeps."""
    return {p: a | ({"sweeps.keys"} if "sweeps" in a else set()) for p, a in allowed.items() if p != "sweeps.keys"}


def test_readme_states_the_same_directions():
    rule = readme_rule((ROOT / "README.md").read_text())
    assert rule, "README.md: the Layout section has no `a <- b` chain stating the import directions"
    stated = {p: a for p, a in rule.items() if p in PACKAGES}
    for p in PACKAGES:
        stated.setdefault(p, set())
    assert stated == _closure(ALLOWED), f"README's Layout says {stated}; tests/test_layout.py enforces {ALLOWED}"


# -- the checker itself, on a made-up tree: it must see what it is there to see ------------------------------


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_checker_finds_a_lazy_forbidden_import_and_allows_sweeps_keys(tmp_path):
    _tree(tmp_path, {
        "sweeps/__init__.py": "", "sweeps/keys.py": "", "sweeps/tracking/__init__.py": "",
        "analysis/__init__.py": "from sweeps.keys import TAG_SWEEP\nfrom sweeps import keys\n",
        "analysis/report.py": "def f():\n    from sweeps.tracking import x\n",
        "rims_core/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import rims_cli\n",
        "rims_cli/__init__.py": "",
    })
    bad = forbidden_imports("analysis", ALLOWED, tmp_path)
    assert bad == ["analysis/report.py:2: `from sweeps.tracking import x` imports sweeps.tracking; analysis may "
                   "import only sweeps.keys"]
    assert forbidden_imports("rims_core", ALLOWED, tmp_path) == [
        "rims_core/__init__.py:3: `import rims_cli` imports rims_cli; rims_core may import none of the other "
        "packages"]


def test_checker_finds_a_cycle_but_not_one_through_a_function_body(tmp_path):
    _tree(tmp_path, {
        "sweeps/__init__.py": "",
        "sweeps/a.py": "from .b import x\n",
        "sweeps/b.py": "import os\nfrom . import c\n",
        "sweeps/c.py": "from sweeps.a import y\n",
        "sweeps/d.py": "from .a import y\nfrom .e import w\n",  # d <-> e only through a function body
        "sweeps/e.py": "def f():\n    from .d import z\n",
    })
    assert import_cycles("sweeps", tmp_path) == [
        "cycle among sweeps.a, sweeps.b, sweeps.c: sweeps.a -> sweeps.b (sweeps/a.py:1); "
        "sweeps.b -> sweeps.c (sweeps/b.py:2); sweeps.c -> sweeps.a (sweeps/c.py:1)"]


def test_readme_rule_reads_arrow_chains():
    text = "# x\n## Layout\n\n`rims_core <- rllib_models <- sweeps` and `sweeps.keys <- analysis`\n## Next\n`a <- b`"
    assert readme_rule(text) == {"rims_core": set(), "rllib_models": {"rims_core"},
                                 "sweeps": {"rims_core", "rllib_models"}, "sweeps.keys": set(),
                                 "analysis": {"sweeps.keys"}}
