"""The tutorial's files run, print what the tutorial shows, and their tests pass.

docs/tutorial.md includes each file of examples/library and the output
beside it (examples/library/output/), so neither can drift from the other.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.postgres import require_postgres

LIBRARY = Path(__file__).parents[2] / "examples" / "library"
STEPS = ["step1_aggregates", "step2_store", "step3_commands", "step4_read_model"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter on our own files
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd, check=False
    )


@pytest.mark.parametrize("step", STEPS)
def test_each_step_prints_what_the_tutorial_shows(step: str, tmp_path: Path) -> None:
    """Run from an empty folder, twice: the same output, the tutorial's, and no files left."""
    expected = (LIBRARY / "output" / f"{step}.txt").read_text(encoding="utf-8")
    for _ in range(2):
        result = run(str(LIBRARY / f"{step}.py"), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected
    assert list(tmp_path.iterdir()) == []


def test_the_same_application_on_postgresql(tmp_path: Path) -> None:
    """Step 5 runs step 4's code on PostgreSQL and prints the same pages."""
    result = run(str(LIBRARY / "step5_postgres.py"), require_postgres(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = (LIBRARY / "output" / "step4_read_model.txt").read_text(encoding="utf-8")
    assert result.stdout == expected


def test_the_tutorial_s_own_tests_pass(tmp_path: Path) -> None:
    """Step 6's test file passes under pytest, as a reader runs it."""
    result = run(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(LIBRARY / "test_library.py"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout
