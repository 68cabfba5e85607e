"""Facts about the source tree a maintainer relies on: small modules, and comments that cite only this repository.

Both scan the files git tracks (a fresh clone's view), so local virtual environments and ComfyUI trees never count.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 349  # "under 350 lines": small enough to read in one sitting

# Documents that live outside this repository (the reference write-up and the integration map of the first rounds)
# and their section labels; comments cite docs/ARCHITECTURE.md or state the fact instead.
OUTSIDE_CITATIONS = re.compile(
    r"[Ss]pec (section|§)|\bspec §|reference spec|finding [A-Z]\d|integration (map|finding)|comfyui-integration\.md"
    r"|magicanimate-reference\.md|shared/spec|\(\s*[BG]\d{1,2}\s*[),]|\b[BG]\d{1,2}:")
HISTORY = re.compile(r"\b[Ii]ssues? ?#?\d+\b")


def tracked(*suffixes: str) -> list[Path]:
    """Tracked files with one of ``suffixes`` (relative paths)."""
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [Path(p) for p in out.splitlines() if p.endswith(suffixes) and (REPO / p).is_file()]


def test_every_python_module_is_under_350_lines():
    sizes = {str(p): len((REPO / p).read_text(encoding="utf-8").splitlines()) for p in tracked(".py")}
    assert len(sizes) > 50
    too_long = {p: n for p, n in sizes.items() if n > MAX_LINES}
    assert not too_long, f"split these modules (at most {MAX_LINES} lines): {too_long}"


def test_comments_and_docs_cite_only_this_repository():
    found = []
    for path in tracked(".py", ".md", ".sh", "run"):
        if path.name == "test_code_layout.py":
            continue
        for number, line in enumerate((REPO / path).read_text(encoding="utf-8").splitlines(), 1):
            if OUTSIDE_CITATIONS.search(line) or HISTORY.search(line):
                found.append(f"{path}:{number}: {line.strip()[:120]}")
    assert not found, "cite docs/ARCHITECTURE.md or state the fact:\n" + "\n".join(found)


def test_the_patterns_catch_what_they_name():
    for bad in ("(reference spec section 3)", "spec §2.3 item 4", "integration finding B6", "(B4)", "G5: must be",
                "comfyui-integration.md", "(issue #6)", "issue 10's table"):
        assert OUTSIDE_CITATIONS.search(bad) or HISTORY.search(bad), bad
    for fine in ('docs/ARCHITECTURE.md, "Networks"', "a B-spline", "GB", "4 GB", "the spec of the node"):
        assert not (OUTSIDE_CITATIONS.search(fine) or HISTORY.search(fine)), fine
