"""Only the test bootstrap edits ``sys.path``: every tool is imported normally (``python -m ...`` from the repository
root), so no tracked Python file other than ``devtools/comfy_env.py`` and ``tests/conftest.py`` changes the module
search path, in place or through ``PYTHONPATH``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALLOWED = {"devtools/comfy_env.py", "tests/conftest.py"}
SELF = "tests/test_no_sys_path_edits.py"  # quotes edits as examples only

#: sys.path.insert/append/remove/extend/pop/clear, sys.path[...] = / +=, sys.path = / +=, and PYTHONPATH edits.
EDITS = re.compile(
    r"sys\.path\s*\.\s*(insert|append|remove|extend|pop|clear)\s*\("
    r"|sys\.path\s*\[[^\]]*\]\s*(=|\+=)(?!=)"
    r"|sys\.path\s*(=|\+=)(?!=)"
    r"|PYTHONPATH[\"']\s*\]\s*=(?!=)"
    r"|environ\s*\.\s*(setdefault|update|__setitem__)\s*\([^)]*PYTHONPATH"
    r"|putenv\s*\(\s*[\"']PYTHONPATH"
)


def sys_path_edits(text: str) -> list[str]:
    """The lines of ``text`` that edit ``sys.path`` or ``PYTHONPATH`` (quoted in strings or not: generated code
    runs too)."""
    return [line.strip() for line in text.splitlines() if EDITS.search(line) and "EDITS" not in line]


def tracked_python_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [name for name in out.splitlines() if name]


def test_the_pattern_catches_every_kind_of_edit():
    for line in ("sys.path.insert(0, p)", "sys.path.append(p)", "sys.path.remove(p)", "sys.path.extend([p])",
                 "sys.path[:0] = [p]", "sys.path[0] = p", "sys.path = [p]", "sys.path += [p]",
                 'os.environ["PYTHONPATH"] = p', "os.environ.setdefault('PYTHONPATH', p)"):
        assert sys_path_edits(line), line
    for line in ("if p in sys.path:", "x = sys.path[0]", "sys.path.index(p)", "env['PYTHONPATH'] == p"):
        assert not sys_path_edits(line), line


def test_no_sys_path_edits_outside_the_test_bootstrap():
    found = {}
    for name in tracked_python_files():
        if name in ALLOWED or name == SELF or not (REPO / name).is_file():
            continue
        edits = sys_path_edits((REPO / name).read_text(encoding="utf-8", errors="replace"))
        if edits:
            found[name] = edits
    assert not found, f"sys.path / PYTHONPATH edited outside {sorted(ALLOWED)}: {found}"
