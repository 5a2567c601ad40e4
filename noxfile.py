"""Every check the project runs: `nox` runs lint, typing, tests, docs and build, as CI does."""

import zipfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "typing", "tests", "docs", "build"]
nox.options.error_on_missing_interpreters = True

PYPROJECT = nox.project.load_toml("pyproject.toml")


def group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint rules and formatting."""
    session.install(*group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typing(session: nox.Session) -> None:
    """Mypy --strict over src, tests and examples (the orders app included), and the docs' code."""
    session.install(
        "-e", ".[postgres,nats,rabbitmq,otel,crypto]",
        "-e", "examples/orders[otel]", "-e", "examples/shipping",
        *group("typing"),
    )  # fmt: skip
    session.run("mypy")
    blocks = str(Path(session.create_tmp()) / "doc-blocks")
    session.run("python", "scripts/doc_blocks.py", blocks)
    session.run("mypy", "--strict", blocks)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, the orders app's included (pass pytest arguments after --)."""
    session.install(
        "-e", ".[postgres,nats,rabbitmq,otel,crypto]",
        "-e", "examples/orders[otel]", "-e", "examples/shipping",
        *group("tests"),
    )  # fmt: skip
    session.run("pytest", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with --strict: a broken link or reference fails it."""
    session.install("-e", ".[postgres,nats,rabbitmq,otel,crypto]", *group("docs"))
    build = ["mkdocs", "build", "--strict", "--site-dir", "build/site"]
    # The variable silences the theme's end-of-life banner, not a build problem.
    session.run(*build, *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def build(session: nox.Session) -> None:
    """Build the sdist and the wheel, install the wheel alone in a fresh venv, run the quickstart.

    The quickstart runs from a scratch folder, so it imports the installed
    wheel and nothing from this checkout.
    """
    session.install("build>=1.2")
    out = Path(session.create_tmp()) / "dist"
    session.run("python", "-m", "build", "--outdir", str(out), silent=True)
    (wheel,) = out.glob("fabula-*.whl")
    (sdist,) = out.glob("fabula-*.tar.gz")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("fabula/py.typed", "fabula/__init__.py", "fabula/postgres/__init__.py"):
        if needed not in names:
            session.error(f"{wheel.name} lacks {needed}")
    if any(name.startswith(("tests/", "examples/", "benchmarks/")) for name in names):
        session.error(f"{wheel.name} holds files that are not the package")
    scratch = Path(session.create_tmp()) / "scratch"
    scratch.mkdir(exist_ok=True)
    venv = scratch / "venv"
    session.run("python", "-m", "venv", "--clear", str(venv), silent=True)
    python = str(venv / "bin" / "python")
    session.run(python, "-m", "pip", "install", "--quiet", str(wheel), external=True)
    quickstart = Path("examples/quickstart.py").resolve()
    output = session.run(
        python, str(quickstart), external=True, silent=True, env={"PYTHONPATH": ""}
    )
    if "cart at version 2, total 5.75" not in str(output):
        session.error(f"the quickstart, run from the wheel, printed: {output}")
    where = session.run(
        python, "-c", "import fabula; print(fabula.__file__)", external=True, silent=True
    )
    if str(venv) not in str(where):
        session.error(f"the quickstart imported fabula from {where}, not the wheel")
    session.log(f"built {wheel.name} and {sdist.name}; the quickstart runs from the wheel")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks: fabula beside raw sqlite3, psycopg, nats-py and aio-pika (not by default)."""
    session.install("-e", ".[postgres,nats,rabbitmq,otel,crypto]", "opentelemetry-sdk>=1.25")
    session.run("python", "benchmarks/bench.py", *session.posargs)
    session.run("python", "benchmarks/bench_postgres.py", *session.posargs)
    session.run("python", "benchmarks/bench_reactions.py", *session.posargs)
    session.run("python", "benchmarks/bench_relay.py", *session.posargs)
    session.run("python", "benchmarks/bench_telemetry.py", *session.posargs)
    session.run("python", "benchmarks/bench_personal.py", *session.posargs)


@nox.session
def compare(session: nox.Session) -> None:
    """fabula beside the eventsourcing library on the same workloads (not run by default)."""
    session.install("-e", ".[postgres]", "eventsourcing==9.5.6")
    session.run("python", "benchmarks/bench_compare.py", *session.posargs)


@nox.session
def mutate(session: nox.Session) -> None:
    """Mutation testing of the kernel, a score per module (slow; not run by default).

    Pass module names to run some: `nox -s mutate -- _pagination _store`;
    `--survivors` lists the mutants that survived.
    """
    session.install("-e", ".[postgres]", "-e", "examples/orders", *group("tests"), *group("mutate"))
    session.run("python", "scripts/mutate.py", *session.posargs)
