"""Mutation testing of the kernel with Cosmic Ray: a score per module.

    nox -s mutate                      # every module below (hours on two cores)
    nox -s mutate -- _pagination _store  # some of them
    nox -s mutate -- _store --recheck    # after adding tests: run the survivors again

Each module is mutated in place, one mutant at a time, and the tests that
pin it run against each mutant; a mutant the tests do not fail "survives".
Cosmic Ray rather than mutmut: it changes the file on disk, so the
editable install, the orders package and the child-process tests all see
the mutant (mutmut 3 runs a copy of the sources through trampolines that
child processes never import). Sessions are kept in `.mutation/`, so an
interrupted run resumes where it stopped.

A line marked `# pragma: no mutate` is skipped: use it only for a mutant
shown to be equivalent, and say why on that line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"

# The tests that pin each module: fast ones, whose failure means the module is wrong.
MODULES: dict[str, list[str]] = {
    "_pagination": ["tests/test_pagination.py"],
    "_idempotency": [
        "tests/test_idempotency.py",
        "tests/test_memory.py",
        "tests/test_protocols.py",
    ],
    "_store": ["tests/test_memory.py", "tests/test_repository.py", "tests/test_protocols.py"],
    "_stored": ["tests/test_storage.py", "tests/test_memory.py", "tests/test_sqlite.py"],
    "_projection_store": [
        "tests/test_memory.py",
        "tests/test_projections.py",
        "tests/test_protocols.py",
    ],
    "_projections": ["tests/test_projections.py"],
    "_aggregate": ["tests/test_aggregate.py", "tests/test_repository.py"],
    "_repository": [
        "tests/test_repository.py",
        "tests/test_snapshots.py",
        "tests/test_idempotency.py",
    ],
    "_serialization": ["tests/test_serialization.py", "tests/test_events.py"],
    "_converter": ["tests/test_serialization.py", "tests/test_events.py"],
    "_commands": ["tests/test_commands.py"],
    "_middleware": ["tests/test_commands.py"],
}

# Operators left out. Bit and power operators swapped in for arithmetic:
# the kernel does no such arithmetic, they only multiply the run time. And
# `|` replaced by anything: in the kernel it joins types, in annotations
# (never evaluated, under `from __future__ import annotations`, so every
# such mutant is equivalent) or in isinstance() (where any other operator
# raises TypeError at once).
EXCLUDED_OPERATORS = [
    r"core/ReplaceBinaryOperator_.*_(Pow|RShift|LShift|BitOr|BitAnd|BitXor|FloorDiv|Mod)$",
    r"core/ReplaceBinaryOperator_BitOr_.*",
]


def config(module: str, tests: list[str]) -> str:
    """The Cosmic Ray configuration of one module's session."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "--timeout=30",  # the slowest of these tests takes about 6 s: longer is a hang (killed)
        "--timeout-method=thread",  # ends even a busy loop that never yields
        *tests,
    ]
    excluded = ", ".join(json.dumps(pattern) for pattern in EXCLUDED_OPERATORS)
    return (
        "[cosmic-ray]\n"
        f'module-path = "src/fabula/{module}.py"\n'
        "timeout = 300.0\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(' '.join(command))}\n"
        "\n[cosmic-ray.distributor]\n"
        'name = "local"\n'
        "\n[cosmic-ray.filters.operators-filter]\n"
        f"exclude-operators = [{excluded}]\n"
    )


def run(*command: str | Path) -> str:
    """Run a Cosmic Ray command from the repository root; return its output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(  # noqa: S603 - our own tools, no shell
        [str(c) for c in command], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def tool(name: str) -> str:
    """The path of a Cosmic Ray command installed beside this Python."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        msg = f"{name} is not installed here: run this through `nox -s mutate`"
        raise SystemExit(msg)
    return found


def forget_survivors(session: Path) -> None:
    """Drop the results of the mutants that survived, so that they run again.

    For after adding tests: a mutant the tests killed stays killed when
    tests are only added, so only the survivors need running again. Cosmic
    Ray has no command for this; its session is SQLite (version 8's schema).
    """
    with contextlib.closing(sqlite3.connect(session)) as db, db:
        db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'")


def mutate(module: str, *, recheck: bool) -> tuple[int, int, int]:
    """Run (or resume) one module's session; return (mutants, killed, survived)."""
    WORK.mkdir(exist_ok=True)
    cfg, session = WORK / f"{module}.toml", WORK / f"{module}.sqlite"
    cfg.write_text(config(module, MODULES[module]), encoding="utf-8")
    if recheck and session.exists():
        forget_survivors(session)
    if not session.exists():
        run(tool("cosmic-ray"), "init", cfg, session)
    # The filters mark pending mutants as skipped (new pragmas, new exclusions).
    run(tool("cr-filter-operators"), session, cfg)
    run(tool("cr-filter-pragma"), session)
    source = ROOT / "src" / "fabula" / f"{module}.py"
    original = source.read_bytes()
    try:
        run(tool("cosmic-ray"), "exec", cfg, session)
    finally:
        # Cosmic Ray mutates the file in place: never leave a mutant behind
        # (after Ctrl-C, say).
        source.write_bytes(original)
    killed = survived = 0
    for line in run(tool("cosmic-ray"), "dump", session).splitlines():
        _, result = json.loads(line)
        outcome = None if result is None else result.get("test_outcome")
        # Skipped (filtered) and incompetent (the mutant did not even import) count for nothing.
        killed += outcome == "killed"
        survived += outcome == "survived"
    return killed + survived, killed, survived


def survivors(module: str) -> str:
    """Cosmic Ray's report of the mutants that survived in one module."""
    return run(tool("cr-report"), WORK / f"{module}.sqlite", "--surviving-only")


def main() -> None:
    """Run the sessions and print a score per module."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"some of: {', '.join(MODULES)}")
    parser.add_argument("--survivors", action="store_true", help="list the surviving mutants")
    parser.add_argument(
        "--recheck", action="store_true", help="run the survivors again (after adding tests)"
    )
    arguments = parser.parse_args()
    unknown = sorted(set(arguments.modules) - set(MODULES))
    if unknown:
        parser.error(f"no such module: {', '.join(unknown)} (choose from {', '.join(MODULES)})")
    rows = []
    for module in arguments.modules or list(MODULES):
        mutants, killed, survived = mutate(module, recheck=arguments.recheck)
        rows.append((module, mutants, killed, survived))
        if arguments.survivors:
            print(survivors(module))
    print(f"{'module':<20} {'mutants':>8} {'killed':>8} {'survived':>9} {'score':>7}")
    for module, mutants, killed, survived in rows:
        score = f"{100 * killed / mutants:.1f}%" if mutants else "-"
        print(f"{module:<20} {mutants:>8} {killed:>8} {survived:>9} {score:>7}")


if __name__ == "__main__":
    main()
