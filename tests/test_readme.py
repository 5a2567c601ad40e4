"""The README's code runs as written."""

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"(<!-- not run: [^>]*-->\n)?```python\n(.*?)```", re.DOTALL)


def python_blocks() -> list[tuple[bool, str]]:
    return [(not marker, code) for marker, code in BLOCK.findall(README)]


class TestReadme:
    def test_quickstart_is_the_example_file(self) -> None:
        """The README's first block is examples/quickstart.py, character for character."""
        runnable, first = python_blocks()[0]
        assert runnable
        assert first == (ROOT / "examples" / "quickstart.py").read_text(encoding="utf-8")

    def test_runnable_blocks_run_in_order(self) -> None:
        """Every block not marked 'not run' runs, in one interpreter, after the ones before."""
        program = "\n".join(code for runnable, code in python_blocks() if runnable)
        result = subprocess.run(  # noqa: S603 - our own interpreter on our own README
            [sys.executable, "-c", program], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert "cart at version 2, total 5.75" in result.stdout
        assert "2 ItemAdded" in result.stdout

    def test_every_block_is_run_or_says_why_not(self) -> None:
        """A block that is not run carries a comment giving the reason."""
        blocks = README.count("```python")
        assert blocks == len(python_blocks())
        assert sum(runnable for runnable, _ in python_blocks()) >= 2

    def test_first_command_installs_and_runs_the_orders_demo(self) -> None:
        """The README's first command is the demo (tests/examples runs `orders demo` itself)."""
        command = (
            "python3 -m venv .venv && .venv/bin/pip install -e . -e examples/orders "
            "&& .venv/bin/orders demo"
        )
        first = README.split("```console\n", 1)[1].split("\n", 1)[0]
        assert first == command
        assert (ROOT / "examples" / "orders" / "pyproject.toml").read_text().count(
            'orders = "orders.cli:main"'
        ) == 1

    def test_set_up_commands_are_the_ones_ci_runs(self) -> None:
        """The README's check command is the one .ci/run executes."""
        command = "python3 -m venv .venv && .venv/bin/pip install nox && .venv/bin/nox"
        assert command in README
        assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


DOCS = sorted((ROOT / "docs").glob("*.md"))
PUBLIC_MODULES = [
    "fabula",
    "fabula.exceptions",
    "fabula.memory",
    "fabula.nats",
    "fabula.postgres",
    "fabula.rabbitmq",
    "fabula.sqlite",
    "fabula.storage",
    "fabula.testing",
    "fabula.testing.strategies",
]


def test_every_public_module_has_a_reference_page_in_the_site() -> None:
    """The API reference renders each public module, whole or name by name, all of it.

    A page may render a module object by object, grouped by topic: then
    every name the module exports is rendered. The site's nav lists every page.
    """
    pages = sorted((ROOT / "docs" / "reference").glob("*.md"))
    rendered = {
        line.removeprefix("::: ").strip()
        for page in pages
        for line in page.read_text(encoding="utf-8").splitlines()
        if line.startswith("::: ")
    }
    for name in PUBLIC_MODULES:
        if name in rendered:
            continue
        module = importlib.import_module(name)
        exported = {
            item
            for item in module.__all__
            if not item.startswith("__") and not inspect.ismodule(getattr(module, item))
        }
        shown = {target.removeprefix(f"{name}.") for target in rendered}
        assert exported - shown == set(), f"{name}: not in the reference"
    assert {target.rpartition(".")[0] for target in rendered} | rendered >= set(PUBLIC_MODULES)
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in [*DOCS, *pages]:
        assert str(page.relative_to(ROOT / "docs")) in nav, f"{page.name} is not in the nav"


SNIPPET = re.compile(r'^--8<-- "([^":]+)(?::([\w-]+))?"$')


def included(code: str) -> list[tuple[str, str | None]] | None:
    """The (file, section) includes if `code` is made only of snippet lines, else None."""
    lines = [line for line in code.splitlines() if line.strip()]
    matches = [SNIPPET.match(line) for line in lines]
    if not lines or not all(matches):
        return None
    return [(m.group(1), m.group(2)) for m in matches if m]


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_docs_code_blocks_run(page: Path, tmp_path: Path) -> None:
    """Every python block of the docs pages runs (in a scratch folder), or says why not.

    A block that only includes code from the tree (`--8<-- "file:section"`)
    is tested where that code lives; here its file and section must exist.
    """
    text = page.read_text(encoding="utf-8")
    blocks = BLOCK.findall(text)
    assert len(blocks) == text.count("```python")
    for marker, code in blocks:
        if marker:
            continue
        includes = included(code)
        if includes is not None:
            for path, section in includes:
                source = (ROOT / path).read_text(encoding="utf-8")
                if section is not None:
                    assert f"# --8<-- [start:{section}]" in source, f"{path}:{section}"
                    assert f"# --8<-- [end:{section}]" in source, f"{path}:{section}"
            continue
        result = subprocess.run(  # noqa: S603 - our own interpreter on our own docs
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
        )
        assert result.returncode == 0, f"{page.name}:\n{code}\n{result.stderr}"


def test_the_tutorial_shows_every_library_file_and_its_output() -> None:
    """The tutorial includes each file of examples/library (which tests run), not copies."""
    tutorial = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    shown = set(re.findall(r'^--8<-- "([^":]+)"$', tutorial, re.MULTILINE))
    library = ROOT / "examples" / "library"
    files = {
        str(path.relative_to(ROOT))
        for path in library.rglob("*")
        if path.suffix in {".py", ".txt"} and "__pycache__" not in path.parts
    }
    assert shown == files


def test_the_orders_tour_shows_tested_code() -> None:
    """The tour of the orders service shows the application and its tests, not copies."""
    tour = (ROOT / "docs" / "orders.md").read_text(encoding="utf-8")
    includes = [inc for _, code in BLOCK.findall(tour) for inc in included(code) or []]
    assert len(includes) >= 10
    for path, _ in includes:
        assert path.startswith(("examples/orders/src/orders/", "tests/examples/")), path


def test_docs_code_needs_no_casts_ignores_or_any() -> None:
    """The docs' code type-checks as a user's would (nox -s typing runs mypy --strict on it).

    It may not get there by casting, ignoring or falling back to Any.
    """
    shortcuts = re.compile(r"\bcast\(|type:\s*ignore|\bAny\b")
    for page in [ROOT / "README.md", *DOCS]:
        for marker, code in BLOCK.findall(page.read_text(encoding="utf-8")):
            if not marker:
                assert not shortcuts.search(code), f"{page.name}:\n{code}"


def test_the_examples_need_no_casts_ignores_or_any() -> None:
    """The orders service and the tutorial's library type-check as a user's app would."""
    shortcuts = re.compile(r"\bcast\(|type:\s*ignore|\bAny\b")
    for path in sorted((ROOT / "examples").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not shortcuts.search(text), path.relative_to(ROOT)
