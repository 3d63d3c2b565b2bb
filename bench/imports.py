"""Audit of rrsis's own imports: function-level imports of rrsis modules, module-level import cycles, and
imports of another module's private (`_name`) names.

    python bench/imports.py [--list]

Module level means the import runs when the module is imported (top level, or inside a top-level `if`/`try`
other than `if TYPE_CHECKING:`); anything inside a `def` is function level. A cycle is a strongly connected
component of the module-level graph over `rrsis.*` modules (a package `__init__` counts as its package);
cycles that only close through function-level imports, and between `rrsis.<package>`s, are counted apart.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "rrsis"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _targets(node: ast.Import | ast.ImportFrom, here: str, is_pkg: bool) -> Iterator[tuple[str, list[str]]]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, []
        return
    base = node.module or ""
    if node.level:  # relative import
        package = here.split(".") if is_pkg else here.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    yield base, [alias.name for alias in node.names]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def walk_imports(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """(import node, at module level?) for every import in the tree."""

    def visit(node: ast.AST, module_level: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, module_level
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                continue  # typing only: never runs
            else:
                yield from visit(child, module_level)

    yield from visit(tree, True)


def audit() -> tuple[list[str], dict[str, set[str]], dict[str, set[str]], list[str]]:
    """(function-level imports, module-level graph, graph with function-level edges too, private imports)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    function_level: list[str] = []
    private: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    every: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in sorted(modules.items()):
        tree = ast.parse(path.read_text(), str(path))
        for node, top in walk_imports(tree):
            for target, names in _targets(node, mod, path.name == "__init__.py"):
                if not (target == "rrsis" or target.startswith("rrsis.")):
                    continue
                where = f"{path.relative_to(ROOT.parent)}:{node.lineno} {target}"
                # `from pkg import sub` depends on the submodule; `from mod import name` on the module
                submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
                deps = {d for d in (submodules or [target]) if d in modules and d != mod}
                every[mod] |= deps
                if not top:
                    function_level.append(where)
                    continue
                private += [f"{where}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
                graph[mod] |= deps
    return function_level, graph, every, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list every function-level import")
    args = parser.parse_args()
    function_level, graph, every, private = audit()
    found = cycles(graph)
    hidden = [c for c in cycles(every) if c not in found]
    packages: dict[str, set[str]] = {}
    for mod, deps in graph.items():  # rrsis.<package> level: rrsis.config <-> rrsis.models is a layering cycle
        top = ".".join(mod.split(".")[:2])
        packages.setdefault(top, set()).update(".".join(d.split(".")[:2]) for d in deps)
        packages[top].discard(top)
    for deps in list(packages.values()):
        for dep in deps:
            packages.setdefault(dep, set())
    package_cycles = cycles(packages)
    if args.list:
        print("\n".join(function_level))
    for component in found:
        print("cycle:", " <-> ".join(component))
    for component in hidden:
        print("cycle through function-level imports:", " <-> ".join(component))
    for component in package_cycles:
        print("package cycle:", " <-> ".join(component))
    for where in private:
        print("private import:", where)
    print(f"function-level imports of rrsis modules: {len(function_level)}")
    print(f"module-level import cycles: {len(found)}")
    print(f"cycles through function-level imports: {len(hidden)}")
    print(f"package-level cycles: {len(package_cycles)}")
    print(f"imports of private names: {len(private)}")


if __name__ == "__main__":
    main()
