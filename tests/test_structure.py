"""The package's shape: no import cycle among basam_hf's modules (function-level imports count: they only postpone
a cycle), and functions and modules small enough to read."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "basam_hf"
MAX_FUNCTION_LINES = 100
MAX_MODULE_LINES = 700
# Copies of the package's modules shipped with the embedded model (remote code), not modules of the package.
NOT_MODULES = ("default",)


def module_files() -> dict[str, Path]:
    """`{"basam_hf.x": path}` for every module of the package (a package is named by its `__init__.py`)."""
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[0] in NOT_MODULES:
            continue
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        files[".".join(("basam_hf", *parts))] = path
    return files


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST):
    """Every import statement, at any depth, except those under `if TYPE_CHECKING:` (never executed)."""
    for node in ast.iter_child_nodes(tree):
        if _is_type_checking_block(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node)


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` imports (relative or absolute, at any level of the code)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from . import x`: x is a submodule when there is one, else a name of the package.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            while target and target not in modules:  # `import basam_hf.data.codecs` -> that module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def package_graph() -> dict[str, set[str]]:
    modules = module_files()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    # Importing a submodule imports its package first anyway: an edge to its own package is no cycle to untangle.
    return {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}


def test_the_cycle_check_finds_cycles():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_function_level_and_relative_imports(tmp_path):
    source = "from . import b\nfrom .sub import c\n\ndef f():\n    from ..top import d\n"
    (tmp_path / "a.py").write_text(source)
    modules = {name: tmp_path / "x.py" for name in ("p.q.b", "p.q.sub", "p.top", "p.q.a")}
    assert imported_modules("p.q.a", tmp_path / "a.py", modules) == {"p.q.b", "p.q.sub", "p.top"}


def test_no_import_cycle_among_the_packages_modules():
    assert import_cycles(package_graph()) == []


def _long_functions() -> list[str]:
    offenders = []
    for name, path in module_files().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    offenders.append(f"{name}.{node.name} ({length} lines)")
    return offenders


def _long_modules() -> list[str]:
    offenders = []
    for name, path in module_files().items():
        length = len(path.read_text(encoding="utf-8").splitlines())
        if length > MAX_MODULE_LINES:
            offenders.append(f"{name} ({length} lines)")
    return offenders


def test_no_function_over_100_lines():
    assert _long_functions() == []


def test_no_module_over_700_lines():
    assert _long_modules() == []
