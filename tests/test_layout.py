"""The package layout: no import cycle among divjax modules, no module too long to read, nothing
at divjax/ top level but the allowed few (the rest lives in subpackages: engine, network, tasks,
reference, frontends, algorithms, data, reproduction), no function too long to read, and every
name of the public API (`divjax.api`) imports.

The import graph is read from the source with `ast`, not by importing: every `import` and
`from ... import` of a divjax module, at module level and inside functions alike (an import
deferred into a function body still makes a cycle; it only hides it), plus
`importlib.import_module("divjax...")` with a literal name. An edge goes to the module named;
`from divjax.tasks import models` names the module `divjax.tasks.models`, `from divjax.data import
padded_table` names the package `divjax.data`. Running a package's `__init__` before its
submodules is Python's doing, not an edge. Code under `if __name__ == "__main__":` counts too
(a module run as a script imports what the command line imports; `divjax.frontends.command` is what both
share). An import whose name is computed (`import_module(name)` over a list) cannot be read;
write such imports out.

Functions: none longer than MAX_FUNCTION_LINES, in any module of the package (subpackages
included), but those in KNOWN_LONG while they are being split.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "divjax"
MAX_LINES = 400
MAX_FUNCTION_LINES = 100

# Modules allowed past MAX_LINES, each with its reason. Nothing else may grow past it.
LONG_MODULES: dict[str, str] = {}

# Functions (module path, qualified name) allowed past MAX_FUNCTION_LINES while they are being
# split (issue 32). Nothing else may grow past it.
KNOWN_LONG: set[tuple[str, str]] = {
}

# The only modules at divjax/ top level, each with its reason: everything else lives in a
# subpackage (docs/concepts/architecture.md says which).
TOP_LEVEL: dict[str, str] = {
    "__init__.py": "the package; re-exports divjax.api",
    "__main__.py": "`python -m divjax`: the divjax command",
    "api.py": "the public API: every name users may import, in one list",
    "config.py": "SimConfig and HParams: the contract every subpackage reads",
    "config_checks.py": "SimConfig's checks and ConfigError, raised by every subpackage",
    "plugins.py": "algorithms and tasks named by import path (algorithms, tasks, front ends)",
    "testing.py": "divjax.testing: the conformance checks users run on their own algorithm",
}
SUBPACKAGES = ("algorithms", "data", "engine", "frontends", "network", "reference", "reproduction",
               "tasks")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the divjax package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported_modules(name: str, tree: ast.AST, modules: dict[str, Path],
                     is_package: bool = False) -> set[str]:
    """The divjax modules that module `name` (its parsed source `tree`) imports anywhere."""

    def known(dotted: str | None) -> str | None:
        """The longest prefix of `dotted` that is a divjax module (None: not divjax)."""
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    package = name if is_package else name.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(known(a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:                       # relative: from . import x, from .y import z
                parts = package.split(".")
                up = parts[:len(parts) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in modules else known(base))
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"):
            found.add(known(node.args[0].value))
    found.discard(None)
    found.discard(name)
    return found  # type: ignore[return-value]


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(name, ast.parse(path.read_text(), str(path)), modules,
                                   path.name == "__init__.py")
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_layout__graph_sees_the_imports_it_must_see():
    """The reader finds module-level, function-level, `from pkg import module`, relative and
    `importlib.import_module` imports (else an acyclic verdict would mean nothing)."""
    graph = import_graph()
    assert "divjax.tasks.registry" in graph["divjax.engine.sim"]             # module level
    assert "divjax.engine.sim" in graph["divjax.frontends.cli_run"]          # inside a function
    assert "divjax.frontends.command" in graph["divjax.frontends.compare"]   # under __main__
    assert "divjax.tasks.models" in graph["divjax.data.cifar10"]     # from divjax.tasks import ...
    assert "divjax.algorithms.base" in graph["divjax.algorithms.divshare"]
    src = ("import importlib\n\n\ndef f():\n    importlib.import_module('divjax.data')\n"
           "    from .tasks import models\n    from .algorithms import base\n")
    seen = imported_modules("divjax.probe", ast.parse(src), module_files())
    assert seen == {"divjax.data", "divjax.tasks.models", "divjax.algorithms.base"}


def test_layout__no_import_cycle_among_divjax_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layout__find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("rel", sorted(str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")))
def test_layout__module_is_short_enough_to_read(rel):
    lines = len((ROOT / rel).read_text().splitlines())
    if rel in LONG_MODULES:
        return
    assert lines <= MAX_LINES, (f"{rel} has {lines} lines (> {MAX_LINES}): split it by concern, "
                                f"or add it to LONG_MODULES with the reason it is one concept")


def test_layout__long_module_allowlist_is_not_stale():
    for rel in LONG_MODULES:
        path = ROOT / rel
        assert path.is_file(), f"{rel} is in LONG_MODULES but does not exist: remove it"
        lines = len(path.read_text().splitlines())
        assert lines > MAX_LINES, (f"{rel} is in LONG_MODULES but has {lines} lines "
                                   f"(<= {MAX_LINES}): remove it from the list")


def function_lengths(tree: ast.AST) -> dict[str, int]:
    """Qualified name (`outer.inner`, `Class.method`) -> lines (decorators excluded), for every
    function and method in `tree`, nested ones included."""
    out: dict[str, int] = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    out[name] = child.end_lineno - child.lineno + 1
                name += "."
            visit(child, name)

    visit(tree, "")
    return out


def long_functions() -> dict[tuple[str, str], int]:
    """(module path, qualified name) -> lines, of every divjax function past
    MAX_FUNCTION_LINES (every .py under divjax/, subpackages included)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        for name, lines in function_lengths(ast.parse(path.read_text(), rel)).items():
            if lines > MAX_FUNCTION_LINES:
                found[(rel, name)] = lines
    return found


def test_layout__no_function_too_long_to_read():
    too_long = {k: v for k, v in long_functions().items() if k not in KNOWN_LONG}
    assert not too_long, (f"functions over {MAX_FUNCTION_LINES} lines: " + ", ".join(
        f"{rel}:{name} ({lines})" for (rel, name), lines in sorted(too_long.items()))
        + ": split them into named steps")


def test_layout__known_long_functions_are_not_stale():
    long = long_functions()
    stale = sorted(k for k in KNOWN_LONG if k not in long)
    assert not stale, (f"in KNOWN_LONG but not over {MAX_FUNCTION_LINES} lines (or gone): "
                       f"{stale}: remove them from the list")


def test_layout__function_lengths_are_measured():
    """Methods, nested functions and functions in subpackage modules are all measured."""
    src = ("class A:\n    def m(self):\n        def inner():\n            pass\n"
           "        return 1\n\n\nasync def f():\n    pass\n")
    assert function_lengths(ast.parse(src)) == {"A.m": 4, "A.m.inner": 2, "f": 2}
    probe = {("divjax/algorithms/adpsgd.py", "make_adpsgd"), ("divjax/frontends/cli.py", "main")}
    seen = {(str(p.relative_to(ROOT)), n) for p in PACKAGE.rglob("*.py")
            for n in function_lengths(ast.parse(p.read_text()))}
    assert probe <= seen


def test_layout__top_level_holds_only_the_allowed_modules():
    extra = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in TOP_LEVEL)
    assert not extra, (f"divjax/ top level holds {extra}: move each into the subpackage it belongs "
                       f"to ({', '.join(SUBPACKAGES)}; docs/concepts/architecture.md), or add it "
                       f"to TOP_LEVEL with the reason it is none of them")
    stale = sorted(name for name in TOP_LEVEL if not (PACKAGE / name).is_file())
    assert not stale, f"{stale} are in TOP_LEVEL but do not exist: remove them"


def test_layout__every_subpackage_says_what_lives_there():
    packages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert packages == sorted(SUBPACKAGES), f"subpackages {packages}: update SUBPACKAGES, docs"
    for name in packages:
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
        assert doc and len(doc.split()) >= 8, f"divjax/{name}/__init__.py needs a docstring " \
                                              f"saying what lives there"


def test_layout__every_public_name_imports():
    """Every name of `divjax.api.__all__` is importable from `divjax`, listed once, and the
    package exports exactly them (plus `api`); the public modules import."""
    import divjax
    from divjax import api

    assert len(set(api.__all__)) == len(api.__all__), "a name is listed twice in divjax.api.__all__"
    missing = [name for name in api.__all__ if not hasattr(divjax, name)]
    assert not missing, f"divjax.api.__all__ lists {missing}, which do not import"
    assert sorted(divjax.__all__) == sorted(["api", *api.__all__])
    namespace: dict = {}
    exec("from divjax import *", namespace)           # what a user's star import gets
    assert set(api.__all__) <= set(namespace)
    for module in api.PUBLIC_MODULES:
        importlib.import_module(module)
