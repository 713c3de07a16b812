"""pytest imports the plugin on every run of every project: it must stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def test_package_and_plugin_import_no_heavy_modules() -> None:
    code = (
        "import sys, templatecheck, templatecheck.plugin, templatecheck.cli, templatecheck.checks.template, "
        "templatecheck.checks.tokenizer, templatecheck.checks.reference, templatecheck.formats.detect\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'tokenizers', 'huggingface_hub', 'numpy', "
        "'mistral_common', 'sentencepiece') "
        "if m in sys.modules)\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ------------------------------------------------------------------------------------------ the import graph

PACKAGE = Path(__file__).resolve().parent.parent / "templatecheck"

#: Imports allowed to close a cycle, each inside a function, each with its reason. Keep it minimal: an entry
#: that no longer closes a cycle, or that moves to module level, fails the test.
ALLOWED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``line``; ``local``: inside a function (runs when it is called)."""

    source: str
    target: str
    line: int
    local: bool


def _modules(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root`` by dotted name; a package is the module of its ``__init__``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(node: ast.AST, local: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under ``node`` with whether it runs inside a function; the body of an
    ``if TYPE_CHECKING:`` is skipped (it never runs), its ``else`` is not."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            for branch in child.orelse:
                yield from _imports_of(branch, local)
            continue
        yield from _imports_of(child, local)


def _imports_of(node: ast.AST, local: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    local = local or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node, local
    yield from _imports(node, local)


def import_graph(root: Path) -> list[Edge]:
    """The imports between the modules of the package at ``root`` (see :func:`test_no_import_cycle`)."""
    modules = _modules(root)
    edges = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node, local in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # `from P import m` loads submodule m (P need only have started); `from P import x` reads P
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            edges += [Edge(name, t, node.lineno, local) for t in targets if t in modules and t != name]
    return edges


def find_cycle(edges: list[Edge]) -> list[Edge]:
    """One cycle of ``edges`` (as the edges that make it), or ``[]`` when the graph is acyclic."""
    out: dict[str, list[Edge]] = {}
    for edge in edges:
        out.setdefault(edge.source, []).append(edge)
    state: dict[str, str] = {}
    path: list[Edge] = []

    def visit(node: str) -> list[Edge]:
        state[node] = "open"
        for edge in sorted(out.get(node, []), key=lambda e: (e.target, e.line)):
            if state.get(edge.target) == "open":
                start = next((i for i, e in enumerate(path) if e.source == edge.target), len(path))
                return [*path[start:], edge]
            if edge.target not in state:
                path.append(edge)
                found = visit(edge.target)
                if found:
                    return found
                path.pop()
        state[node] = "done"
        return []

    for node in sorted(out):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def _shown(cycle: list[Edge]) -> str:
    return "\n".join(
        f"  {e.source} -> {e.target} (line {e.line}{', in a function' if e.local else ''})" for e in cycle
    )


def test_no_import_cycle() -> None:
    """No module of templatecheck imports, directly or through others, a module that imports it back.

    The rule, precisely: the nodes are the package's modules (a package is the module of its ``__init__.py``).
    ``A`` imports ``B`` when ``A`` holds ``import B`` or ``from B import x``, at module level or inside a
    function (an import inside a function is a cycle that is only postponed), but not under
    ``if TYPE_CHECKING:`` (it never runs). ``from P import m`` where ``P.m`` is a module is an import of
    ``P.m``, not of ``P``: Python needs ``P`` only to have started. A submodule does not import its parent
    package by being one: Python runs ``P/__init__.py`` first, but ``P.m`` sees ``P``'s half-run namespace
    only when it reads a name from ``P``, which is an import of ``P`` above. So ``templatecheck/__init__.py``
    re-exporting ``templatecheck.model``, which imports ``templatecheck.errors``, is no cycle; a layer module
    reading ``check`` from ``templatecheck.checks``, whose ``__init__`` imports the layer modules, is one.

    :data:`ALLOWED` lists the imports allowed to close a cycle, each inside a function, with its reason.
    """
    edges = import_graph(PACKAGE)
    present = {(e.source, e.target): e for e in edges}
    for key in ALLOWED:
        assert key in present, f"stale entry in ALLOWED: {key[0]} no longer imports {key[1]}"
        assert all(e.local for e in edges if (e.source, e.target) == key), (
            f"{key}: allowed only in a function"
        )
    cycle = find_cycle([e for e in edges if (e.source, e.target) not in ALLOWED])
    assert not cycle, "import cycle in templatecheck:\n" + _shown(cycle)
    for key in ALLOWED:
        rest = [e for e in edges if (e.source, e.target) not in ALLOWED or (e.source, e.target) == key]
        assert find_cycle(rest), f"ALLOWED entry {key} closes no cycle any more: remove it"


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_graph_sees_cycles_through_functions_and_package_inits(tmp_path: Path) -> None:
    local = _package(
        tmp_path / "local",
        {
            "__init__.py": "",
            "a.py": "from pkg.b import f\n",
            "b.py": "def f():\n    from pkg import a\n    return a\n",
        },
    )
    assert _shown(find_cycle(import_graph(local))) == (
        "  pkg.a -> pkg.b (line 1)\n  pkg.b -> pkg.a (line 2, in a function)"
    )
    registry = _package(
        tmp_path / "registry",
        {"__init__.py": "def check(): ...\nfrom pkg import layer\n", "layer.py": "from pkg import check\n"},
    )
    assert _shown(find_cycle(import_graph(registry))) == (
        "  pkg -> pkg.layer (line 2)\n  pkg.layer -> pkg (line 1)"
    )
    relative = _package(
        tmp_path / "relative",
        {"__init__.py": "", "sub/__init__.py": "from . import x\n", "sub/x.py": "from .. import sub\n"},
    )
    assert _shown(find_cycle(import_graph(relative))) == (
        "  pkg.sub -> pkg.sub.x (line 1)\n  pkg.sub.x -> pkg.sub (line 1)"
    )


def test_the_graph_ignores_type_checking_imports_and_the_parent_package(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "from pkg.a import A\nfrom pkg.errors import E\n",
            "errors.py": "class E(Exception): ...\n",
            "a.py": "from typing import TYPE_CHECKING\nfrom pkg.errors import E\nif TYPE_CHECKING:\n"
            "    from pkg.b import B\nclass A: ...\n",
            "b.py": "from pkg.a import A\nclass B(A): ...\n",
        },
    )
    edges = import_graph(root)
    assert {(e.source, e.target) for e in edges} == {
        ("pkg", "pkg.a"),
        ("pkg", "pkg.errors"),
        ("pkg.a", "pkg.errors"),
        ("pkg.b", "pkg.a"),
    }
    assert find_cycle(edges) == []
