"""Node interfaces read from ComfyUI: each node's inputs, outputs and display name as ComfyUI serves them at
``/object_info`` (V3 nodes: ``GET_NODE_INFO_V1()``; V1 nodes: ``INPUT_TYPES`` / ``RETURN_TYPES`` / ``RETURN_NAMES``
and ``NODE_DISPLAY_NAME_MAPPINGS``), turned into the :class:`~.nodes.NodeSpec` the workflow builder writes from.

This pack's nodes come from its own ``nodes/`` package (:func:`devtools.pack.pack_nodes`), core nodes from ComfyUI's
``nodes.NODE_CLASS_MAPPINGS`` with the core extras (``comfy_extras``) loaded. ComfyUI is imported only when
:func:`derived_specs` runs; when this process has not started it yet, :func:`ensure_comfyui` does, on the CPU and
with every directory ComfyUI writes to pointed at a scratch directory.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import io
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from .nodes import In, NodeSpec, NodeUI

#: Input types the frontend draws as a widget (a list of options is a combo too), unless ``forceInput`` is set.
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
#: Options that give a combo an upload button (V1 ``image_upload``/``video_upload``/``audio_upload``, V3 ``upload``).
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "upload")
#: Suffix ComfyUI appends to a deprecated node's display name; the files name the node as before.
DEPRECATED = " (DEPRECATED)"

#: Core nodes whose interface in newer ComfyUI versions is larger than at ``CORE_VERSION`` (:mod:`.nodes`), the
#: version the UI files declare for core nodes: class_type -> (input names, number of outputs) at that version. The
#: derived spec keeps only those, so the files are the same whichever ComfyUI builds them, and they match the version
#: they declare. Newer versions open them unchanged: the inputs added since are optional and take their defaults, and
#: outputs are linked by slot index, the added ones after the old.
#:
#: * CreateVideo: newer versions add the optional widget ``bit_depth``;
#: * GetVideoComponents: newer versions add the outputs ``bit_depth`` and ``color_space``;
#: * SaveVideo: newer versions make ``format`` and ``codec`` dynamic combos (``codec`` optional) and add a VIDEO
#:   output.
CORE_PINS: dict[str, tuple[tuple[str, ...], int]] = {
    "CreateVideo": (("images", "fps", "audio"), 1),
    "GetVideoComponents": (("video",), 3),
    "SaveVideo": (("video", "filename_prefix", "format", "codec"), 0),
}


# ------------------------------------------------------------------------------------------------------------------
# /object_info entry -> NodeSpec (pure)


def object_info(cls: type, class_type: str) -> dict:
    """The parts of ComfyUI's ``/object_info`` entry of node class ``cls`` that a spec needs: ``input``,
    ``input_order``, ``output``, ``output_name``, ``display_name``. Imports ComfyUI's ``nodes`` for a V1 node."""
    if hasattr(cls, "GET_NODE_INFO_V1"):  # V3 node: what the server serves for it
        info = cls.GET_NODE_INFO_V1()
        return {key: info[key] for key in ("input", "input_order", "output", "output_name", "display_name")}
    import nodes  # ComfyUI's (V1 nodes are core nodes here)

    types = cls.INPUT_TYPES()
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    return {"input": types, "input_order": {section: list(entries) for section, entries in types.items()},
            "output": list(cls.RETURN_TYPES), "output_name": list(names),
            "display_name": nodes.NODE_DISPLAY_NAME_MAPPINGS.get(class_type, class_type)}


def input_from_info(name: str, entry: list | tuple, optional: bool) -> In:
    """One input, as the frontend makes it: a widget when its type is a widget type (a list of options or a dynamic
    combo: a combo) without ``forceInput``, its default from its options (a dynamic combo's: its first option)."""
    type_, opts = entry[0], (entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {})
    if isinstance(type_, (list, tuple)) or "DYNAMICCOMBO" in str(type_).upper():
        type_ = "COMBO"
    if type_ not in WIDGET_TYPES or opts.get("forceInput"):
        return In(name, type_, optional=optional)
    default: Any = opts.get("default")
    dynamic = [o.get("key") for o in opts.get("options", []) if isinstance(o, dict)]
    if default is None and dynamic:
        default = dynamic[0]
    return In(name, type_, widget=True, optional=optional, default=default,
              control=bool(opts.get("control_after_generate")), upload=any(opts.get(o) for o in UPLOAD_OPTIONS))


def spec_from_info(info: dict, ui: NodeUI, pin: tuple[tuple[str, ...], int] | None = None) -> NodeSpec:
    """The :class:`NodeSpec` of a node from its ``/object_info`` entry (:func:`object_info`) and its UI facts.

    Inputs in the frontend's order: required then optional, each section in ComfyUI's ``input_order``; hidden inputs
    are not inputs of the graph. ``pin``: (input names, number of outputs) to keep (:data:`CORE_PINS`).
    """
    inputs = [input_from_info(name, info["input"][section][name], section == "optional")
              for section in ("required", "optional") for name in info["input_order"].get(section, [])]
    outputs = tuple(zip(info["output_name"], info["output"], strict=True))
    if pin is not None:
        names, n_outputs = pin
        inputs = [i for i in inputs if i.name in names]
        if tuple(i.name for i in inputs) != names or len(outputs) < n_outputs:
            raise ValueError(f"the pinned interface {pin} no longer fits the node's inputs {info['input_order']} "
                             f"and outputs {info['output_name']}")
        outputs = outputs[:n_outputs]
    display_name = info["display_name"]
    display_name = display_name[:-len(DEPRECATED)] if display_name.endswith(DEPRECATED) else display_name
    return NodeSpec(display_name, tuple(inputs), outputs, pack=ui.pack, size=ui.size)


# ------------------------------------------------------------------------------------------------------------------
# The node classes, from ComfyUI (imported here, on demand)


@contextlib.contextmanager
def _quiet():
    """Only errors from ComfyUI's log and nothing from its prints while loading nodes."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def ensure_comfyui(explicit: str | None = None) -> None:
    """Start ComfyUI in this process unless it is already (the test suite, ``scripts.animate``): the tree
    ``devtools.comfy_env.locate_comfyui`` finds (``explicit`` first), on the CPU, with no ``__pycache__`` written into
    it and its input, output, temp and user directories in a scratch directory removed at exit."""
    if "comfy.model_management" in sys.modules:
        return
    from devtools import comfy_env

    comfy_dir, _origin = comfy_env.locate_comfyui(explicit)
    sys.dont_write_bytecode = True
    comfy_env.bootstrap_inprocess(comfy_dir, cpu=True)
    import folder_paths

    scratch = Path(tempfile.mkdtemp(prefix="magicanimate-workflows-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    for sub in ("input", "output", "temp", "user"):
        (scratch / sub).mkdir()
        getattr(folder_paths, f"set_{sub}_directory")(str(scratch / sub))
    with _quiet():  # e.g. "torchaudio missing" warnings of model code the specs do not need
        import nodes  # noqa: F401 - ComfyUI's


def node_classes(ui: dict[str, NodeUI]) -> dict[str, type]:
    """class_type -> node class of every node in ``ui``: this pack's from its ``nodes/`` package, core ones from
    ComfyUI's ``nodes.NODE_CLASS_MAPPINGS`` (loading the core extras there first when one is missing)."""
    import nodes  # ComfyUI's

    if any(not u.pack and ct not in nodes.NODE_CLASS_MAPPINGS for ct, u in ui.items()):
        with _quiet():  # extras whose optional dependencies are missing log a warning each
            asyncio.run(nodes.init_builtin_extra_nodes())
    pack: dict[str, type] = {}
    if any(u.pack for u in ui.values()):
        from devtools.pack import pack_nodes

        pack = pack_nodes()
    classes = {}
    for class_type, u in ui.items():
        source = pack if u.pack else nodes.NODE_CLASS_MAPPINGS
        if class_type not in source:
            raise KeyError(f"{class_type} is not a node of {'this pack' if u.pack else 'ComfyUI'}")
        classes[class_type] = source[class_type]
    return classes


def node_spec(class_type: str, cls: type, ui: NodeUI) -> NodeSpec:
    """The spec of node ``class_type`` (class ``cls``) as ComfyUI serves it, core nodes pinned (:data:`CORE_PINS`)."""
    return spec_from_info(object_info(cls, class_type), ui, None if ui.pack else CORE_PINS.get(class_type))


def derived_specs(ui: dict[str, NodeUI], comfyui: str | None = None) -> dict[str, NodeSpec]:
    """class_type -> spec of every node in ``ui``, read from ComfyUI (started first if needed: :func:`ensure_comfyui`,
    ``comfyui`` the tree to start)."""
    ensure_comfyui(comfyui)
    classes = node_classes(ui)
    return {class_type: node_spec(class_type, classes[class_type], u) for class_type, u in ui.items()}
