"""Reports the package's import circles and uses of other modules' private names.

Run ``python scripts/layout.py`` from the repository; it prints what it found and exits 1 if
there is any circle or private use. ``tests/test_layout.py`` runs the same checks.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "pgtrail"


@dataclass(frozen=True)
class PrivateUse:
    """One use of a name that belongs to another module or object."""

    path: str
    line: int
    text: str


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST, here: str, is_package: bool, modules: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pgtrail"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".") if is_package else here.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("pgtrail"):
                continue
            # `from pgtrail import copytext` imports the module, not the package's face.
            names = [f"{base}.{alias.name}" for alias in node.names]
            found.update(names)
            if not all(n in modules for n in names):
                found.add(base)
    return found


def import_graph() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports (anywhere in it)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = _imports(tree, name, path.name == "__init__.py", set(files))
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), ignoring edges from a
    package to its own submodules (an ``__init__`` re-exporting its rooms is not a circle)."""
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


# Public by contract though spelled with an underscore: NamedTuple's API and the standard
# library's process exit.
_PUBLIC_UNDERSCORED = frozenset({"_replace", "_make", "_asdict", "_fields", "_field_defaults"})
_STDLIB_OWNERS = frozenset({"os", "sys"})


def _private(name: str) -> bool:
    if name in _PUBLIC_UNDERSCORED:
        return False
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_private_names(tree: ast.AST) -> set[str]:
    """The private names a module defines: its functions, classes, methods, and attributes
    it assigns (``self._x = ...``)."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
    return {name for name in own if _private(name)}


def private_uses(paths: list[Path]) -> list[PrivateUse]:
    """``from pgtrail.x import _y``, and ``a._y`` where ``_y`` is not the module's own."""
    uses: list[PrivateUse] = []
    for path in paths:
        source = path.read_text()
        tree = ast.parse(source, str(path))
        own = _own_private_names(tree)
        rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pgtrail"):
                for alias in node.names:
                    if _private(alias.name):
                        uses.append(PrivateUse(rel, node.lineno, f"import {alias.name}"))
            elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls", *_STDLIB_OWNERS):
                    continue
                text = ast.get_source_segment(source, node) or node.attr
                uses.append(PrivateUse(rel, node.lineno, text))
    return uses


def main() -> int:
    graph = import_graph()
    groups = circles(graph)
    files = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    uses = private_uses(files)
    print(f"{len(graph)} modules, {sum(len(t) for t in graph.values())} imports")
    print(f"{len(groups)} circle(s)")
    for group in groups:
        print("  " + " <-> ".join(group))
    print(f"{len(uses)} private use(s)")
    for use in uses:
        print(f"  {use.path}:{use.line}: {use.text}")
    return 1 if groups or uses else 0


if __name__ == "__main__":
    raise SystemExit(main())
