"""Write the docs' runnable Python blocks out as modules, for `mypy --strict` (nox -s typing).

The README's blocks run one after another in one interpreter (see
tests/test_readme.py), so they become one module; each docs page's block
is a module of its own. Blocks marked `<!-- not run: ... -->` and blocks
that only include code from the tree (`--8<--`), which is checked where it
lives, are left out.

Usage: python scripts/doc_blocks.py OUTPUT_FOLDER
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- not run: [^>]*-->\n)?```python\n(.*?)```", re.DOTALL)


def runnable(page: Path) -> list[str]:
    """The page's blocks that run as they are."""
    text = page.read_text(encoding="utf-8")
    return [
        code
        for marker, code in BLOCK.findall(text)
        if not marker and not code.lstrip().startswith("--8<--")
    ]


def main(folder: str) -> int:
    """Write the modules into `folder` (emptied of earlier ones first)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.py"):
        old.unlink()
    written = 0
    readme = runnable(ROOT / "README.md")
    (out / "readme.py").write_text("\n".join(readme), encoding="utf-8")
    written += 1
    for page in sorted((ROOT / "docs").glob("*.md")):
        for number, code in enumerate(runnable(page)):
            (out / f"{page.stem}_{number}.py").write_text(code, encoding="utf-8")
            written += 1
    print(f"{written} modules in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
