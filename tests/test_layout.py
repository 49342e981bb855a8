"""The package layout: no import circles, and each package imports only what its docstring allows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("arch", "workloads", "sim")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> modules of ``packages`` it imports (every import statement, lazy ones included)."""
    files = {module_name(root, f): f for pkg in packages for f in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in files else stem for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in files and t != mod}
        graph[mod] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_circles():
    assert find_cycle(import_graph(ROOT, PACKAGES)) is None


def test_cycle_finder_catches_a_planted_circle(tmp_path):
    pkg = tmp_path / "sim"
    (pkg / "cli").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli" / "__init__.py").write_text("from . import run\n")
    (pkg / "cli" / "run.py").write_text("from .common import helper\n")
    (pkg / "cli" / "common.py").write_text("def helper():\n    from sim.cli import run\n")
    cycle = find_cycle(import_graph(tmp_path, ("sim",)))
    assert cycle is not None and set(cycle) == {"sim.cli.run", "sim.cli.common"}


# package prefix -> prefixes of this project's modules it may import (besides itself)
ALLOWED = {
    "arch": (),
    "workloads": ("arch",),
    "sim.engine": ("arch", "workloads", "sim.mapping"),
    "sim.functional": ("arch", "workloads", "sim.placement"),
    "sim.report": ("sim.result", "arch.safeio", "arch.errors"),   # atomic file writes
    "sim.serving": ("arch", "workloads"),                          # the scheduler knows no engine
    "sim.cli": ("arch", "workloads", "sim"),
}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_what_they_may(package):
    graph = import_graph(ROOT, PACKAGES)
    allowed = (package, *ALLOWED[package])
    bad = {(m, t) for m, targets in graph.items() if m == package or m.startswith(package + ".")
           for t in targets if not any(t == a or t.startswith(a + ".") for a in allowed)}
    assert not bad, sorted(bad)


def test_only_the_cli_imports_the_cli():
    graph = import_graph(ROOT, PACKAGES)
    bad = {(m, t) for m, ts in graph.items() for t in ts
           if t.startswith("sim.cli") and not m.startswith("sim.cli")}
    assert not bad, sorted(bad)


def test_report_never_imports_simpy():
    for path in (ROOT / "sim" / "report").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "simpy" not in names, path
