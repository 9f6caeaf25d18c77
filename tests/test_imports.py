"""Import structure of `src/ssl_hf`, read with `ast` (nothing is imported): no import circle, thin package faces."""

import ast
from pathlib import Path

import pytest


SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ssl_hf"
# Method packages register themselves on import (STYLE.md section 7): their faces may also call the registry and name
# the constants of its presets.
REGISTRATION_CALLS = ("register_method", "register")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute name `from <node.module> import ...` refers to inside `module`."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _imported(module: str) -> set[str]:
    """ssl_hf modules `module` imports anywhere in its body, function-level imports included.

    `from a.b import c` counts `a.b.c` when `c` is a module, else `a.b`; the parent packages that Python runs on the way
    are not counted (every module would then import `ssl_hf/__init__.py`). Nor is a function-level `import ssl_hf`
    (run for the Auto-class registration): Python runs the root package before any of its modules, so when the
    function is called the root is already loaded.
    """
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if node not in tree.body and [alias.name for alias in node.names] == ["ssl_hf"]:
                continue
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
    return {name for name in found if name in MODULES and name != module}


def import_cycles() -> list[list[str]]:
    """Every strongly connected group of more than one module in the import graph (Tarjan), each sorted."""
    graph = {module: sorted(_imported(module)) for module in MODULES}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in graph:
        if module not in index:
            visit(module)
    return cycles


def test_the_import_graph_is_read():
    edges = _imported("ssl_hf.evaluation.finetune")
    assert {"ssl_hf.evaluation.features", "ssl_hf.data.views"} <= edges
    assert "ssl_hf.export" in _imported("ssl_hf.evaluation.features")  # a function-level import counts


def test_no_import_circle():
    assert import_cycles() == []


def _allowed(statement: ast.stmt, method_package: bool) -> bool:
    if isinstance(statement, ast.Import | ast.ImportFrom):
        return True
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):  # the docstring
        return isinstance(statement.value.value, str)
    if isinstance(statement, ast.Assign) and all(isinstance(t, ast.Name) for t in statement.targets):
        names = [t.id for t in statement.targets]
        if all(name in ("__all__", "__version__") for name in names):
            return True
        return method_package and all(name.startswith("_") and name.isupper() for name in names)  # preset constants
    if method_package and isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
        func = statement.value.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        return name in REGISTRATION_CALLS
    return False


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("__init__.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_package_faces_hold_only_imports(path):
    method_package = path.parent.parent == PACKAGE / "models"
    body = ast.parse(path.read_text()).body
    extra = [f"line {s.lineno}: {type(s).__name__}" for s in body if not _allowed(s, method_package)]
    assert not extra, f"{path.relative_to(PACKAGE)} holds more than imports, __all__ and a docstring: {extra}"
