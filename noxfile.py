"""Every check the project runs: `nox` runs lint, typing, tests and docs, as CI does."""

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "typing", "tests", "docs"]
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
    """Mypy --strict over src, tests and examples (the orders app included)."""
    session.install("-e", ".[postgres]", "-e", "examples/orders", *group("typing"))
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, the orders app's included (pass pytest arguments after --)."""
    session.install("-e", ".[postgres]", "-e", "examples/orders", *group("tests"))
    session.run("pytest", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with --strict: a broken link or reference fails it."""
    session.install("-e", ".[postgres]", *group("docs"))
    build = ["mkdocs", "build", "--strict", "--site-dir", "build/site"]
    # The variable silences the theme's end-of-life banner, not a build problem.
    session.run(*build, *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suites: fabula beside raw sqlite3 and raw psycopg (not run by default)."""
    session.install("-e", ".[postgres]")
    session.run("python", "benchmarks/bench.py", *session.posargs)
    session.run("python", "benchmarks/bench_postgres.py", *session.posargs)


@nox.session
def compare(session: nox.Session) -> None:
    """fabula beside the eventsourcing library on the same workloads (not run by default)."""
    session.install("-e", ".", "eventsourcing==9.5.6")
    session.run("python", "benchmarks/bench_compare.py", *session.posargs)


@nox.session
def mutate(session: nox.Session) -> None:
    """Mutation testing of the kernel, a score per module (slow; not run by default).

    Pass module names to run some: `nox -s mutate -- _pagination _store`;
    `--survivors` lists the mutants that survived.
    """
    session.install("-e", ".[postgres]", "-e", "examples/orders", *group("tests"), *group("mutate"))
    session.run("python", "scripts/mutate.py", *session.posargs)
