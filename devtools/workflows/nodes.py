"""What the builder knows about each node it uses (input order, widgets, outputs, UI size), and the model and
input file names the shipped graphs name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from magicanimate import model_layout

# ------------------------------------------------------------------------------------------------------------------
# Model file names (relative to ComfyUI's models/<folder>/), from the pack's one model-file layout.

SD15_CHECKPOINT = model_layout.SD15_CHECKPOINT.name  # models/checkpoints/
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
# Node specs: just enough of each node's definition to write both formats.


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


NODE_SPECS: dict[str, NodeSpec] = {
    # --- ComfyUI core (nodes.py, comfy_extras/nodes_video.py) ---
    "CheckpointLoaderSimple": NodeSpec(
        "Load Checkpoint", (W("ckpt_name", "COMBO"),), (("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")),
        size=(300, 100)),
    "CLIPTextEncode": NodeSpec(
        "CLIP Text Encode (Prompt)", (W("text", "STRING"), S("clip", "CLIP")), (("CONDITIONING", "CONDITIONING"),),
        size=(360, 100)),
    "VAELoader": NodeSpec("Load VAE", (W("vae_name", "COMBO"),), (("VAE", "VAE"),), size=(300, 60)),
    "LoadImage": NodeSpec(
        "Load Image", (W("image", "COMBO", upload=True),), (("IMAGE", "IMAGE"), ("MASK", "MASK")), size=(310, 330)),
    "LoadVideo": NodeSpec("Load Video", (W("file", "COMBO", upload=True),), (("VIDEO", "VIDEO"),), size=(300, 380)),
    "GetVideoComponents": NodeSpec(
        "Get Video Components", (S("video", "VIDEO"),), (("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")),
        size=(230, 110)),
    "EmptyLatentImage": NodeSpec(
        "Empty Latent Image", (W("width", "INT", 512), W("height", "INT", 512), W("batch_size", "INT", 1)),
        (("LATENT", "LATENT"),), size=(240, 110)),
    "KSampler": NodeSpec(
        "KSampler",
        (S("model", "MODEL"), W("seed", "INT", 0, control=True), W("steps", "INT", 20), W("cfg", "FLOAT", 8.0),
         W("sampler_name", "COMBO"), W("scheduler", "COMBO"), S("positive", "CONDITIONING"),
         S("negative", "CONDITIONING"), S("latent_image", "LATENT"), W("denoise", "FLOAT", 1.0)),
        (("LATENT", "LATENT"),), size=(260, 270)),
    "ImageBatch": NodeSpec("Batch Images", (S("image1", "IMAGE"), S("image2", "IMAGE")), (("IMAGE", "IMAGE"),),
                           size=(250, 60)),
    "VAEDecode": NodeSpec("VAE Decode", (S("samples", "LATENT"), S("vae", "VAE")), (("IMAGE", "IMAGE"),),
                          size=(180, 70)),
    "CreateVideo": NodeSpec(
        "Create Video", (S("images", "IMAGE"), W("fps", "FLOAT", 30.0), S("audio", "AUDIO", optional=True)),
        (("VIDEO", "VIDEO"),), size=(220, 110)),
    "SaveVideo": NodeSpec(
        "Save Video",
        (S("video", "VIDEO"), W("filename_prefix", "STRING", "video/ComfyUI"), W("format", "COMBO", "auto"),
         W("codec", "COMBO", "auto")),
        (), size=(260, 200)),
    # --- comfyui_controlnet_aux (node_wrappers/densepose.py): the DensePose estimator of the third workflow ---
    "DensePosePreprocessor": NodeSpec(
        "DensePose Estimator",
        (S("image", "IMAGE"), W("model", "COMBO", "densepose_r50_fpn_dl.torchscript"),
         W("cmap", "COMBO", "Viridis (MagicAnimate)"), W("resolution", "INT", 512)),
        # Taller than its widgets need: without comfyui_controlnet_aux the frontend draws a missing-node placeholder
        # whose value boxes need about 200 px, and the node below must not hide under it.
        (("IMAGE", "IMAGE"),), cnr_id="comfyui_controlnet_aux", size=(400, 210)),
    # --- this pack (nodes/*.py) ---
    "MagicAnimateLoader": NodeSpec(
        "Load MagicAnimate (Animate Anyone-style)",
        (W("temporal_checkpoint", "COMBO"), W("appearance_encoder", "COMBO"), W("densepose_controlnet", "COMBO"),
         W("weight_dtype", "COMBO", "auto"), S("model", "MODEL", optional=True)),
        (("MODEL", "MODEL"), ("appearance_encoder", "MAGICANIMATE_APPEARANCE_ENCODER"), ("CONTROL_NET", "CONTROL_NET")),
        pack=True, size=(380, 180)),
    "MagicAnimateAppearanceEncode": NodeSpec(
        "MagicAnimate Appearance Encode",
        (S("appearance_encoder", "MAGICANIMATE_APPEARANCE_ENCODER"), S("vae", "VAE"), S("image", "IMAGE"),
         W("fit", "COMBO", "stretch"), W("width", "INT", 512), W("height", "INT", 512)),
        (("appearance", "MAGICANIMATE_APPEARANCE"),), pack=True, size=(310, 150)),
    "MagicAnimatePoseControl": NodeSpec(
        "Pose Control (DensePose video)",
        (S("control_net", "CONTROL_NET"), S("pose_frames", "IMAGE"), W("strength", "FLOAT", 1.0),
         W("start_percent", "FLOAT", 0.0), W("end_percent", "FLOAT", 1.0), W("fit", "COMBO", "stretch")),
        (("pose", "MAGICANIMATE_POSE"),), pack=True, size=(290, 150)),
    "MagicAnimateSegmentFuse": NodeSpec(
        "MagicAnimate Segment Fuse",
        (W("length", "INT", 16), W("overlap", "INT", 4), W("closed_loop", "BOOLEAN", True),
         W("fuse", "COMBO", "average")),
        (("segments", "MAGICANIMATE_SEGMENTS"),), pack=True, size=(280, 134)),
    "MagicAnimateTemporalSample": NodeSpec(
        "Temporal Sample (dance video)",
        (S("model", "MODEL"), S("appearance", "MAGICANIMATE_APPEARANCE"), S("pose", "MAGICANIMATE_POSE"),
         S("positive", "CONDITIONING"), S("negative", "CONDITIONING"), W("seed", "INT", 1, control=True),
         W("steps", "INT", 25), W("cfg", "FLOAT", 7.5), W("sampler_name", "COMBO", "reference_ddim"),
         W("scheduler", "COMBO", "normal"), W("denoise", "FLOAT", 1.0), W("noise_mode", "COMBO", "tiled"),
         S("segments", "MAGICANIMATE_SEGMENTS", optional=True), S("latent", "LATENT", optional=True),
         S("noise", "NOISE", optional=True)),
        (("LATENT", "LATENT"),), pack=True, size=(290, 370)),
    "MagicAnimatePoseAlign": NodeSpec(
        "MagicAnimate Pose Align",
        (S("pose_frames", "IMAGE"), S("reference_pose", "IMAGE"), W("mode", "COMBO", "first-frame")),
        (("pose_frames", "IMAGE"),), pack=True, size=(240, 80)),
}

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
