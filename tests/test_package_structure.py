"""The package's shape, read from its source with `ast`: no module defines a name twice (ruff does not catch a
second `def` of the same name), and no module imports, directly or through others, a module that imports it back."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "transformers_lavin"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def defined_names(node: ast.stmt) -> list[str]:
    """The names a module-level statement binds by `def`, `class` or plain assignment (imports are left out:
    `import a` and `import a.b` both bind `a`)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [target.id for target in node.targets if isinstance(target, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return [node.target.id]
    return []


def duplicate_definitions(source: str) -> list[tuple[str, int, int]]:
    """`(name, first line, second line)` for each module-level name bound twice."""
    first: dict[str, int] = {}
    duplicates = []
    for node in ast.parse(source).body:
        for name in defined_names(node):
            if name in first:
                duplicates.append((name, first[name], node.lineno))
            first.setdefault(name, node.lineno)
    return duplicates


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `module` imports anywhere in its body: a lazy import inside a function closes a
    cycle just as well, it only delays the failure to the first call."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from . import x` imports the submodule x when there is one, else a name of the package
            submodules = {f"{origin}.{alias.name}" for alias in node.names} & known
            targets |= submodules or {origin}
        elif isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
    return (targets & known) - {module}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        for neighbour in graph[node]:
            if neighbour not in index:
                visit(neighbour)
                lowlink[node] = min(lowlink[node], lowlink[neighbour])
            elif neighbour in stack:
                lowlink[node] = min(lowlink[node], index[neighbour])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_detectors_find_what_they_look_for():
    source = "def f():\n    pass\n\n\nx = 1\n\n\ndef f():\n    pass\n\n\nclass C:\n    pass\n"
    assert duplicate_definitions(source) == [("f", 1, 8)]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve_to_modules():
    graph = {module: imported_modules(module, path, set(MODULES)) for module, path in MODULES.items()}
    # spot checks read from the files: the runner loads images with image_loading; evaluation re-exports the runner
    assert "transformers_lavin.image_loading" in graph["transformers_lavin.evaluation.runner"]
    assert "transformers_lavin.evaluation.runner" in graph["transformers_lavin.evaluation"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_name_defined_twice(module):
    duplicates = duplicate_definitions(MODULES[module].read_text(encoding="utf-8"))
    assert not duplicates, f"{module} defines {', '.join(f'{n!r} (lines {a} and {b})' for n, a, b in duplicates)}"


def test_no_import_cycle():
    graph = {module: imported_modules(module, path, set(MODULES)) for module, path in MODULES.items()}
    cycles = import_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(cycle) for cycle in cycles)
