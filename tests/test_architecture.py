"""The house's shape: layers that import downwards only, no import cycles, and its size limits."""

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src" / "fabula"
BACKENDS = ("fabula.memory", "fabula.sqlite", "fabula.postgres")
TOOLS = ("fabula.testing", "fabula.cli", "fabula.__main__")

# Declarative tables, which the size limits for functions leave out.
TABLES = {"fabula.cli._parser"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def import_time_imports(name: str) -> Iterator[str]:
    """The fabula modules `name` imports when it is imported (not inside functions)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.Try):
            nodes: list[ast.stmt] = node.body
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        else:
            nodes = [node]
        for statement in nodes:
            yield from _targets(statement, package)


def _targets(statement: ast.stmt, package: str) -> Iterator[str]:
    if isinstance(statement, ast.Import):
        for alias in statement.names:
            if alias.name.startswith("fabula"):
                yield alias.name
    elif isinstance(statement, ast.ImportFrom):
        base = statement.module or ""
        if statement.level:
            base = ".".join(package.split(".")[: len(package.split(".")) - statement.level + 1])
            base = f"{base}.{statement.module}" if statement.module else base
        if not base.startswith("fabula"):
            return
        for alias in statement.names:
            submodule = f"{base}.{alias.name}"
            yield submodule if submodule in MODULES else base


GRAPH = {name: sorted(set(import_time_imports(name)) & set(MODULES)) for name in MODULES}


def test_the_graph_sees_the_imports() -> None:
    """The import graph is read right: the store facades import the shared decisions."""
    assert "fabula._stored" in GRAPH["fabula.sqlite._store"]
    assert "fabula._stored" in GRAPH["fabula.postgres._append"]
    assert "fabula.sqlite._schema" in GRAPH["fabula.sqlite._store"]


def cycles(graph: dict[str, list[str]], skip: set[str]) -> list[list[str]]:
    """Every import cycle through modules not in `skip`, one per module it starts from."""
    found = []
    for start in graph:
        if start in skip:
            continue
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            if start in graph[node]:
                found.append([*path, start])
                break
            stack.extend(
                (target, [*path, target])
                for target in graph[node]
                if target not in path and target not in skip
            )
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check below can fail: a two-module loop is found, a chain is not."""
    assert cycles({"a": ["b"], "b": ["a"], "c": ["a"]}, set()) == [["a", "b", "a"], ["b", "a", "b"]]
    assert cycles({"a": ["b"], "b": ["c"], "c": []}, set()) == []


def test_no_import_cycles() -> None:
    """No module imports, at import time, a module that imports it back."""
    # A package's __init__ re-exporting its submodules is not a cycle of the code.
    packages = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert cycles(GRAPH, packages) == []


KERNEL = sorted(n for n in MODULES if n.count(".") == 1 and "._" in n and "__" not in n)


@pytest.mark.parametrize("name", KERNEL)
def test_the_kernel_imports_no_store_and_no_tool(name: str) -> None:
    """Kernel modules (fabula._x) depend on no backend and on no tool: decisions need no I/O."""
    upward = [t for t in GRAPH[name] if t.startswith(BACKENDS + TOOLS)]
    assert upward == []


@pytest.mark.parametrize("backend", ["fabula.sqlite", "fabula.postgres"])
def test_a_backend_imports_no_other_backend(backend: str) -> None:
    """Each backend package imports the kernel and itself, never another backend."""
    others = tuple(b for b in BACKENDS if b != backend)
    crossing = {
        name: [t for t in GRAPH[name] if t.startswith(others)]
        for name in MODULES
        if name.startswith(backend)
    }
    assert {name: targets for name, targets in crossing.items() if targets} == {}


def sizes() -> Iterator[tuple[str, str, int]]:
    for name, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        yield "module", name, len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                yield "class", f"{name}.{node.name}", node.end_lineno - node.lineno + 1  # type: ignore[operator] # set by the parser
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield "function", f"{name}.{node.name}", node.end_lineno - node.lineno + 1  # type: ignore[operator] # set by the parser


LIMITS = {"module": 600, "class": 400, "function": 50}


def test_modules_classes_and_functions_stay_within_the_limits() -> None:
    """No module over 600 lines, no class over 400, no function over 50 (tables aside)."""
    over = [
        f"{kind} {name}: {lines} lines"
        for kind, name, lines in sizes()
        if lines > LIMITS[kind] and name not in TABLES
    ]
    assert over == []


def third_party_imports(name: str) -> set[str]:
    """The top-level names of the packages module `name` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.partition(".")[0])
    return {top for top in found if top not in sys.stdlib_module_names and top != "fabula"}


# What each import name is declared as in pyproject.toml.
DISTRIBUTIONS = {
    "attrs": "attrs",
    "attr": "attrs",
    "cattrs": "cattrs",
    "orjson": "orjson",
    "typing_extensions": "typing-extensions",
    "psycopg": "psycopg",
    "psycopg_pool": "psycopg-pool",
    "pytest": "pytest",
    "hypothesis": "hypothesis",
    "nats": "nats-py",
    "aio_pika": "aio-pika",
    "opentelemetry": "opentelemetry-api",
    "cryptography": "cryptography",
}


def declared(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0] for requirement in requirements}


def test_the_declared_dependencies_are_the_imported_ones() -> None:
    """Each dependency is imported, and each import is declared, in the part that needs it.

    The core needs only the core dependencies; fabula.postgres adds the
    `postgres` extra's, fabula.testing the `testing` extra's, fabula.nats
    and fabula.rabbitmq their brokers' clients.
    """
    project = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    core = declared(project["project"]["dependencies"])
    extras = {
        name: declared(requirements)
        for name, requirements in project["project"]["optional-dependencies"].items()
    }
    parts = {
        "fabula.postgres": "postgres",
        "fabula.testing": "testing",
        "fabula.nats": "nats",
        "fabula.rabbitmq": "rabbitmq",
        "fabula._telemetry": "otel",
        "fabula._metrics": "otel",
        "fabula._personal": "crypto",
    }
    used: dict[str, set[str]] = {"core": set(), **{extra: set() for extra in parts.values()}}
    for name in MODULES:
        part = next((extra for prefix, extra in parts.items() if name.startswith(prefix)), "core")
        imported = third_party_imports(name)
        unknown = imported - set(DISTRIBUTIONS)
        assert unknown == set(), f"{name} imports {unknown}: declare and list them"
        used[part] |= {DISTRIBUTIONS[top] for top in imported}
    assert used["core"] == core
    for extra in parts.values():
        assert used[extra] - core == extras[extra], extra
