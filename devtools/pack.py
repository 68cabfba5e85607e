"""Import this repository as a ComfyUI custom-node package (as ComfyUI's loader does), for tests and tools."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "magicanimate_pack_under_test"


def load_pack() -> ModuleType:
    """The pack's root package (``__init__.py``), imported once under :data:`PACK_NAME`."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(PACK_NAME, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


def pack_nodes() -> dict:
    """node_id -> node class of the pack's nodes."""
    nodes = importlib.import_module(load_pack().__name__ + ".nodes")
    return {n.define_schema().node_id: n for n in nodes.NODES}
