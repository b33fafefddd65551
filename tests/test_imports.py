"""No import circle among fastres' modules (``fastres/`` and ``kernels/``, which is ``fastres.kernels``).

The graph is read from the source with ``ast``, not by importing anything, and counts every import
a module can make:

- ``import a.b`` and ``from a import b`` anywhere in the file: at the top, inside functions and
  methods, under ``if``/``try``; relative imports resolved against the module's package;
- ``importlib.import_module("a.b")`` with a constant name, and with an f-string whose constant
  prefix is ``fastres.`` (an edge to every module under that prefix); a call on a computed name
  (a table's value) counts an edge to every fastres module the file names in a string constant;
- a package's re-exports: ``from fastres import ResNet`` (or ``fastres.ResNet`` after
  ``import fastres``) counts the edge to the module that defines ``ResNet``, found through the
  package's ``from .x import name`` lines and its PEP 562 lazy table (``_LAZY`` in
  ``fastres/__init__.py``), not to the package: a lazy ``__getattr__`` imports only what is
  asked of it, so the package's own file gets no edges from its lazy table.

Importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``; those implicit edges are not
counted (a submodule's parent is always already importing when the submodule runs).
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = {"fastres": REPO / "fastres", "fastres.kernels": REPO / "kernels"}


def module_files() -> dict[str, Path]:
    """Every module of the project by dotted name (a package by its ``__init__.py``)."""
    files: dict[str, Path] = {}
    for prefix, root in ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            parts = [*path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join([prefix, *parts])] = path
    return files


class Project:
    """The project's modules, and which module defines each name a package exports."""

    def __init__(self) -> None:
        self.files = module_files()
        self.trees = {name: ast.parse(path.read_text(), str(path)) for name, path in self.files.items()}
        self.packages = {name for name, path in self.files.items() if path.name == "__init__.py"}

    def absolute(self, module: str, level: int, target: str | None) -> str:
        """The dotted name a (possibly relative) ``from`` import names, seen from ``module``."""
        if level == 0:
            return target or ""
        base = module if module in self.packages else module.rpartition(".")[0]
        for _ in range(level - 1):
            base = base.rpartition(".")[0]
        return f"{base}.{target}" if target else base

    def lazy_table(self, package: str) -> dict[str, str]:
        """A package's PEP 562 table: a module-level dict of name -> defining module's dotted name."""
        table: dict[str, str] = {}
        for node in self.trees[package].body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
                for key, value in zip(node.value.keys, node.value.values):
                    if (isinstance(key, ast.Constant) and isinstance(value, ast.Constant)
                            and isinstance(value.value, str) and value.value in self.files):
                        table[key.value] = value.value
        return table

    def defining_module(self, package: str, name: str, seen: frozenset = frozenset()) -> str:
        """The module ``package.name`` comes from: a submodule, a re-export's source, or the package."""
        if f"{package}.{name}" in self.files:
            return f"{package}.{name}"
        if package not in self.packages or (package, name) in seen:
            return package
        seen = seen | {(package, name)}
        lazy = self.lazy_table(package)
        if name in lazy:
            return self.resolve(lazy[name], name, seen)
        for node in ast.walk(self.trees[package]):
            if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
                source = self.absolute(package, node.level, node.module)
                original = next(a.name for a in node.names if (a.asname or a.name) == name)
                if source in self.files:
                    return self.resolve(source, original, seen)
        return package

    def resolve(self, module: str, name: str, seen: frozenset = frozenset()) -> str:
        """Where ``from module import name`` really lands."""
        return self.defining_module(module, name, seen) if module in self.packages else module

    def under(self, prefix: str) -> list[str]:
        return [m for m in self.files if m.startswith(prefix)]

    def imports(self, module: str) -> dict[str, int]:
        """The project modules ``module`` imports, each with the line of its first import."""
        tree = self.trees[module]
        edges: dict[str, int] = {}
        bound: dict[str, str] = {}  # local name -> project module bound by `import x [as y]`

        def add(target: str, line: int) -> None:
            if target in self.files and target != module:
                edges.setdefault(target, line)

        lazy_getattr = {id(n) for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
                        for n in ast.walk(node)} if module in self.packages else set()
        names_in_strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                            and isinstance(n.value, str) and n.value in self.files]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, node.lineno)
                    if alias.name in self.files:
                        bound[alias.asname or alias.name.partition(".")[0]] = (
                            alias.name if alias.asname else alias.name.partition(".")[0])
            elif isinstance(node, ast.ImportFrom):
                source = self.absolute(module, node.level, node.module)
                for alias in node.names:
                    add(self.resolve(source, alias.name), node.lineno)
                    if f"{source}.{alias.name}" in self.files:
                        bound[alias.asname or alias.name] = f"{source}.{alias.name}"
            elif (isinstance(node, ast.Call) and id(node) not in lazy_getattr
                  and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module" and node.args):
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    add(arg.value, node.lineno)
                elif (isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant)
                      and str(arg.values[0].value).startswith("fastres.")):
                    for target in self.under(arg.values[0].value):
                        add(target, node.lineno)
                else:
                    for target in names_in_strings:
                        add(target, node.lineno)
        # `import fastres` then `fastres.Predictor`: the edge goes to the module that defines it.
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
                add(self.resolve(bound[node.value.id], node.attr), node.lineno)
        return edges


def components(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One circle (a closed path) per strongly connected component."""
    return [closed_path(graph, set(c)) for c in components(graph)]


def closed_path(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """One circle through a component's first module, by breadth-first search back to it."""
    start = min(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in graph[v]:
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, v, start]
                if w in component and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(component)


def import_graph() -> dict[str, dict[str, int]]:
    project = Project()
    return {module: project.imports(module) for module in project.files}


def describe(graph: dict[str, dict[str, int]], component: list[str]) -> str:
    """One circle of the component, then every import between its modules, with file and line."""
    files = module_files()
    inside = [f"{a} imports {b} ({files[a].relative_to(REPO)}:{graph[a][b]})"
              for a in component for b in graph[a] if b in component]
    return " -> ".join(closed_path(graph, set(component))) + "\n    " + "\n    ".join(inside)


def test_no_import_cycle():
    graph = import_graph()
    found = components(graph)
    assert not found, "import circles:\n" + "\n".join(describe(graph, c) for c in found)


def test_the_graph_sees_every_kind_of_import():
    """The reader finds imports inside functions, relative ones, lazy re-exports and import_module."""
    graph = import_graph()
    assert "fastres.kernels.conv" in graph["fastres.kernels"]                 # from .conv import ...
    assert "fastres.engine" in graph["fastres.arena"] or "fastres.kernels" in graph["fastres.arena"]
    assert "fastres.weights" in graph["fastres.runner"]                      # inside a function
    assert "fastres.runner" in graph["fastres.cli"]                          # import_module(table value)
    assert "fastres.kernels.conv_bordered" in graph["fastres.gate.compile"]  # import_module("...")
    assert not graph["fastres"]                                              # the lazy table is no edge
    # `import fastres` then fastres.Predictor: the edge to the module that defines Predictor.
    assert "fastres.predict.predictor" in graph["fastres.benchmark.pipeline"]


def test_a_cycle_is_found_and_shown():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []
