"""What the builder knows about each node it uses (input order, widgets, outputs: read from ComfyUI; UI size: kept
here), and the model and input file names the shipped graphs name."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from magicanimate import model_layout

# ------------------------------------------------------------------------------------------------------------------
# Model file names (relative to ComfyUI's models/<folder>/), from the pack's one model-file layout.

SD15_CHECKPOINT = model_layout.SD15_CHECKPOINT.name  # models/checkpoints/
SD15_TEXT_ENCODER = model_layout.SD15_TEXT_ENCODER.name  # models/text_encoders/
SD15_TEXT_ENCODER_TYPE = "stable_diffusion"  # core CLIPLoader's ``type`` for SD1.5's CLIP ViT-L/14
SD_VAE = model_layout.SD_VAE.name  # models/vae/
TEMPORAL_CHECKPOINT = model_layout.TEMPORAL.name  # models/magicanimate/
APPEARANCE_ENCODER = model_layout.APPEARANCE.name  # models/magicanimate/<folder>/ (config.json + weights)
DENSEPOSE_CONTROLNET = model_layout.CONTROLNET.name  # models/magicanimate/<folder>/

DEMO_IMAGE = "monalisa.png"  # example_inputs/
DEMO_VIDEO = "running.mp4"  # example_inputs/ (DensePose renderings, 42 frames, 25 fps, 512x512)
FROM_VIDEO_INPUT = "dance.mp4"  # ComfyUI/input/: the user's own video of a person (none is shipped)
ALIGN_IMAGE = "demo4.jpg"  # example_inputs/ (MagicAnimate's demo4.png at 512x512)
ALIGN_REFERENCE_POSE = "demo4_densepose.png"  # example_inputs/ (first frame of MagicAnimate's demo4 DensePose video)
DEMO_INPUTS = (DEMO_IMAGE, DEMO_VIDEO, ALIGN_IMAGE, ALIGN_REFERENCE_POSE)  # example_inputs/ files the graphs load

# ------------------------------------------------------------------------------------------------------------------
# Node specs: just enough of each node's definition to write both formats. The inputs, outputs and display names come
# from ComfyUI itself (:mod:`.schemas`, on first use of :data:`NODE_SPECS`); this module keeps what ComfyUI cannot
# tell: each node's UI size, whether it is this pack's, and the one node of a pack that is not installed here.


@dataclass(frozen=True)
class In:
    name: str
    type: str  # socket type, or INT / FLOAT / STRING / BOOLEAN / COMBO for widgets
    widget: bool = False
    optional: bool = False
    default: Any = None  # widget value used when a widget is linked or not given
    control: bool = False  # INT with control_after_generate -> an extra "fixed" entry in widgets_values
    upload: bool = False  # combo with an upload button -> an extra "image" entry in widgets_values


def S(name: str, type_: str, optional: bool = False) -> In:  # noqa: N802 - reads like a table
    return In(name, type_, optional=optional)


def W(name: str, type_: str, default: Any = None, control: bool = False, upload: bool = False) -> In:  # noqa: N802
    return In(name, type_, widget=True, default=default, control=control, upload=upload)


@dataclass(frozen=True)
class NodeSpec:
    display_name: str
    inputs: tuple[In, ...]
    outputs: tuple[tuple[str, str], ...]  # (name, type)
    pack: bool = False  # a node of this pack (else ComfyUI core, or the pack named by cnr_id)
    cnr_id: str | None = None  # another custom node pack's Comfy Registry id (its nodes are not installed in tests)
    # UI size: at least what the frontends compute for the node (``computeSize``, else they enlarge it and it may
    # cover a neighbour), and wide enough for its title (frontends cut a title at ``width - 60`` at 14 px)
    size: tuple[int, int] | None = None
    width: int = 320  # UI width when size is not given

    def input(self, name: str) -> In:
        for inp in self.inputs:
            if inp.name == name:
                return inp
        raise KeyError(f"{self.display_name} has no input {name!r}")

    @property
    def widgets(self) -> list[In]:
        return [i for i in self.inputs if i.widget]


@dataclass(frozen=True)
class NodeUI:
    """What ComfyUI cannot tell about a node the graphs use: its UI size (see :class:`NodeSpec`), and whether it is a
    node of this pack (read from the pack's ``nodes/`` package) or of ComfyUI's core (its ``nodes`` module and
    ``comfy_extras``)."""

    size: tuple[int, int]
    pack: bool = False


#: class_type -> UI facts of every installed node the graphs use; :data:`NODE_SPECS` adds each one's interface.
NODE_UI: dict[str, NodeUI] = {
    # --- ComfyUI core (nodes.py, comfy_extras/nodes_video.py) ---
    "CheckpointLoaderSimple": NodeUI((300, 100)),
    "CLIPLoader": NodeUI((300, 106)),
    "CLIPTextEncode": NodeUI((360, 100)),
    "VAELoader": NodeUI((300, 60)),
    "LoadImage": NodeUI((310, 330)),
    "LoadVideo": NodeUI((300, 380)),
    "GetVideoComponents": NodeUI((230, 110)),
    "EmptyLatentImage": NodeUI((240, 110)),
    "KSampler": NodeUI((260, 270)),
    "ImageBatch": NodeUI((250, 60)),
    "VAEDecode": NodeUI((180, 70)),
    "CreateVideo": NodeUI((220, 110)),
    "SaveVideo": NodeUI((260, 200)),
    # --- this pack (nodes/*.py) ---
    "MagicAnimateLoader": NodeUI((380, 180), pack=True),
    "MagicAnimateAppearanceEncode": NodeUI((310, 150), pack=True),
    "MagicAnimatePoseControl": NodeUI((290, 150), pack=True),
    "MagicAnimateSegmentFuse": NodeUI((280, 134), pack=True),
    "MagicAnimateTemporalSample": NodeUI((290, 370), pack=True),
    "MagicAnimatePoseAlign": NodeUI((240, 80), pack=True),
    "MagicAnimateSaveVideo": NodeUI((340, 230), pack=True),
}

#: The only hand copy of a node interface: comfyui_controlnet_aux (node_wrappers/densepose.py), the DensePose
#: estimator of the third workflow. That pack is not installed with this one (nor in the tests), so its interface
#: cannot be read from ComfyUI; this entry copies the interface its source declares.
HAND_SPECS: dict[str, NodeSpec] = {
    "DensePosePreprocessor": NodeSpec(
        "DensePose Estimator",
        (S("image", "IMAGE"), W("model", "COMBO", "densepose_r50_fpn_dl.torchscript"),
         W("cmap", "COMBO", "Viridis (MagicAnimate)"), W("resolution", "INT", 512)),
        # Taller than its widgets need: without comfyui_controlnet_aux the frontend draws a missing-node placeholder
        # whose value boxes need about 200 px, and the node below must not hide under it.
        (("IMAGE", "IMAGE"),), cnr_id="comfyui_controlnet_aux", size=(400, 210)),
}


class _NodeSpecs(Mapping):
    """class_type -> :class:`NodeSpec` of every node the graphs use: :data:`NODE_UI` nodes with the interface ComfyUI
    serves for them (derived on first use, which imports ComfyUI; :func:`load_node_specs`), and :data:`HAND_SPECS`."""

    def __init__(self) -> None:
        self._specs: dict[str, NodeSpec] | None = None

    def load(self, comfyui: str | None = None) -> dict[str, NodeSpec]:
        if self._specs is None:
            from .schemas import derived_specs  # imports ComfyUI (starting it first unless this process has)

            self._specs = {**derived_specs(NODE_UI, comfyui), **HAND_SPECS}
        return self._specs

    def __getitem__(self, class_type: str) -> NodeSpec:
        return self.load()[class_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self.load())

    def __len__(self) -> int:
        return len(self.load())


NODE_SPECS: Mapping[str, NodeSpec] = _NodeSpecs()


def load_node_specs(comfyui: str | None = None) -> Mapping[str, NodeSpec]:
    """:data:`NODE_SPECS`, derived now; ``comfyui``: the ComfyUI tree to start when this process has none running
    (default: found as :func:`devtools.comfy_env.locate_comfyui` finds it)."""
    NODE_SPECS.load(comfyui)
    return NODE_SPECS

#: An output of a node in a :class:`~devtools.workflows.graph.Graph`: (node id, output slot).
@dataclass(frozen=True)
class Out:
    node: int
    slot: int


CORE_VERSION = "0.3.75"  # the ComfyUI version the UI files say the core nodes were saved with
PACK_REGISTRY_ID = "comfyui-magicanimate"  # pyproject [project].name = Comfy Registry id


# ------------------------------------------------------------------------------------------------------------------
# UI format


def _widgets_values(spec: NodeSpec, values: dict[str, Any]) -> list:
    out: list = []
    for inp in spec.widgets:
        value = values.get(inp.name, inp.default)
        out.append(inp.default if isinstance(value, Out) else value)
        if inp.control:
            out.append("fixed")  # control_after_generate: keep the seed, so the demo is reproducible
        if inp.upload:
            out.append("image")  # the upload button's value, as the frontend saves it
    return out


def widget_index(class_type: str, name: str) -> int:
    """Position of widget ``name`` in a UI node's ``widgets_values``."""
    index = 0
    for inp in NODE_SPECS[class_type].widgets:
        if inp.name == name:
            return index
        index += 1 + inp.control + inp.upload
    raise KeyError(f"{class_type} has no widget {name!r}")
