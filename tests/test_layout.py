"""The package's shape, read from the source with `ast`: camp's modules import one another without a
cycle (function-level imports included), none is over 330 lines, each says what it does, and an import
made inside a function says why on its line."""

from __future__ import annotations

import ast
from pathlib import Path

CAMP = Path(__file__).resolve().parent.parent / "camp"
MODULES = {path.stem: path for path in sorted(CAMP.glob("*.py")) if path.stem != "__init__"}


def _camp_imports(node) -> list[str]:
    """The camp modules an import statement names (`from camp import a, b`, `from camp.a import x`, `import camp.a`)."""
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module == "camp":
            return [alias.name for alias in node.names if alias.name in MODULES]
        if node.module.startswith("camp."):
            return [node.module.split(".")[1]]
    if isinstance(node, ast.Import):
        return [alias.name.split(".")[1] for alias in node.names if alias.name.startswith("camp.")]
    return []


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        graph[name] = {target for node in ast.walk(tree) for target in _camp_imports(node) if target != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, colouring the modules)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_camp_imports_have_no_cycle():
    graph = import_graph()
    assert len(graph) >= 20 and "train" in graph["objective"]  # the graph is really read
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_no_module_is_over_330_lines_and_each_has_a_docstring():
    for name, path in MODULES.items():
        lines = path.read_text().count("\n")
        assert lines <= 330, f"camp/{name}.py has {lines} lines: split it by what it does"
        assert ast.get_docstring(ast.parse(path.read_text())), f"camp/{name}.py has no module docstring"


def test_an_import_inside_a_function_says_why():
    """Function-level camp imports are for one reason only (a command loading MLflow/TensorFlow only when it
    runs), and each says so on its line."""
    unexplained = []
    for name, path in MODULES.items():
        source = path.read_text()
        lines = source.splitlines()
        for function in ast.walk(ast.parse(source)):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if _camp_imports(node) and "#" not in lines[node.lineno - 1]:
                    unexplained.append(f"camp/{name}.py:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not unexplained, "function-level imports without a reason:\n" + "\n".join(unexplained)
