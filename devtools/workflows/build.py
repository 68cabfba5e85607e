"""Generate the shipped example workflows, in both ComfyUI formats, from one Python description per graph.

Outputs (committed; do not edit them by hand)::

    example_workflows/<name>.json       UI format: the folder ComfyUI's frontend lists under Templates for a pack
                                        (with <name>.jpg, the thumbnail the browser test makes); drag-and-drop too
    workflows/api/<name>.api.json       API format (what POST /prompt and scripts/animate.py run); kept out of
                                        example_workflows/ so that it never shows up as a template

Re-run after changing a graph below or a node's inputs::

    python workflows/build_workflows.py            # rewrite the JSON files
    python workflows/build_workflows.py --check    # exit 1 if the committed files are stale (tests do the same)

To add a workflow: write a function that builds a :class:`Graph` and add it to :data:`GRAPHS` (nodes it uses need an
entry in :data:`NODE_SPECS`). Each node is placed by hand (``at=(x, y)``, its ``pos``); the build fails when nodes
overlap, a link runs behind a node, or the view the frontend opens the template with is below the text
level-of-detail threshold at 1920x1080 (:func:`check_layout`, "UI layout" below). The saved view (frontend 1.32) is
the largest zoom at which the whole graph fits a 1920x1080 window beside the frontend's sidebar and under its top
bars, at or above :data:`MIN_SAVED_SCALE`; newer frontends fit the whole graph instead (:func:`fitted_view`, at or
above :data:`MIN_FITTED_SCALE`).

Pure Python (standard library only): it imports nothing from ComfyUI, so it runs anywhere. The facts it needs about
each node (input order, which inputs are widgets, output names/types) are in :data:`NODE_SPECS`;
``tests/test_workflows.py`` checks that table against the real nodes of ComfyUI and of this pack.

UI-format conventions copied from ComfyUI's own workflow templates (comfyui_workflow_templates, frontend 1.27-1.33):

* ``widgets_values`` lists every widget input in the node's input order (V1: ``INPUT_TYPES`` required then optional;
  V3: ``define_schema`` order, required before optional), *including widgets whose value arrives through a link*;
* an INT with ``control_after_generate`` (seeds) is followed by its control value (``"fixed"``/``"randomize"``);
* a combo with an upload button (LoadImage ``image_upload``, LoadVideo ``video_upload``) is followed by ``"image"``;
* ``inputs`` lists the node's sockets (non-widget inputs, optional ones with ``"shape": 7``) in input order, then
  one entry ``{"name", "type", "widget": {"name"}, "link"}`` per widget that is driven by a link;
* ``links`` entries are ``[link_id, from_node, from_slot, to_node, to_slot, type]``, ``to_slot`` indexing ``inputs``.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKFLOWS_DIR = Path(__file__).resolve().parent
REPO_DIR = WORKFLOWS_DIR.parent
UI_DIR = REPO_DIR / "example_workflows"  # ComfyUI's /workflow_templates lists <pack>/example_workflows/*.json
API_DIR = WORKFLOWS_DIR / "api"  # one level deeper than any folder the frontend lists: never a template


def ui_path(name: str, ui_dir: Path = UI_DIR) -> Path:
    return ui_dir / f"{name}.json"


def api_path(name: str, api_dir: Path = API_DIR) -> Path:
    return api_dir / f"{name}.api.json"


# ------------------------------------------------------------------------------------------------------------------
# Model file names (relative to ComfyUI's models/<folder>/), shared by both graphs and by scripts/animate.py.

SD15_CHECKPOINT = "v1-5-pruned-emaonly.safetensors"  # models/checkpoints/
SD_VAE = "vae-ft-mse-840000-ema-pruned.safetensors"  # models/vae/
TEMPORAL_CHECKPOINT = "temporal_attention.ckpt"  # models/magicanimate/
APPEARANCE_ENCODER = "appearance_encoder"  # models/magicanimate/<folder>/ (config.json + weights)
DENSEPOSE_CONTROLNET = "densepose_controlnet"  # models/magicanimate/<folder>/

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

CORE_VERSION = "0.3.75"  # the ComfyUI version the UI files say the core nodes were saved with
PACK_REGISTRY_ID = "comfyui-magicanimate"  # pyproject [project].name = Comfy Registry id

# ------------------------------------------------------------------------------------------------------------------
# Graph description


@dataclass(frozen=True)
class Out:
    node: int
    slot: int


@dataclass
class Node:
    id: int
    class_type: str
    title: str | None
    values: dict[str, Any] = field(default_factory=dict)  # literal or Out
    at: tuple[int, int] | None = None  # layout: ``pos`` in the UI file (canvas units, title bar above it)
    size: tuple[int, int] | None = None  # layout: UI size, if not the spec's

    @property
    def spec(self) -> NodeSpec:
        return NODE_SPECS[self.class_type]

    def __getitem__(self, output: str | int) -> Out:
        outs = self.spec.outputs
        if isinstance(output, int):
            if not 0 <= output < len(outs):
                raise IndexError(f"{self.class_type} has no output {output}")
            return Out(self.id, output)
        names = [n for n, _ in outs]
        if output not in names:
            raise KeyError(f"{self.class_type} has no output {output!r} (has {names})")
        return Out(self.id, names.index(output))


class Graph:
    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = description
        self.nodes: list[Node] = []

    def add(self, class_type: str, title: str | None = None, at: tuple[int, int] | None = None,
            size: tuple[int, int] | None = None, **values: Any) -> Node:
        spec = NODE_SPECS[class_type]
        for key, value in values.items():
            inp = spec.input(key)
            if not inp.widget and not isinstance(value, Out):
                raise TypeError(f"{class_type}.{key} is a socket; connect an output, not {value!r}")
        for inp in spec.inputs:
            if inp.widget and inp.name not in values:
                if inp.default is None:
                    raise TypeError(f"{class_type}.{inp.name} needs a value")
                values[inp.name] = inp.default
            if not inp.widget and not inp.optional and inp.name not in values:
                raise TypeError(f"{class_type}.{inp.name} must be connected")
        node = Node(len(self.nodes) + 1, class_type, title, values, at, size)
        self.nodes.append(node)
        return node

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id - 1]

    def edges(self) -> list[tuple[Node, str, Out]]:
        """(target node, input name, source) for every link, targets in id order, inputs in spec order."""
        result = []
        for node in self.nodes:
            for inp in node.spec.inputs:
                value = node.values.get(inp.name)
                if isinstance(value, Out):
                    result.append((node, inp.name, value))
        return result


# ------------------------------------------------------------------------------------------------------------------
# The shipped graphs


def _animate(g: Graph, reference: Out, ckpt: Node, at: dict[str, tuple[int, int]], pose_frames: Out | None = None,
             components: Node | None = None) -> None:
    """The MagicAnimate part shared by the graphs: reference IMAGE + DensePose frames -> saved mp4.

    ``pose_frames``: DensePose frames made elsewhere in the graph, with ``components`` the GetVideoComponents whose
    fps the mp4 keeps; by default a LoadVideo of a DensePose video provides both. ``at``: the position of each node
    (layout), by role: loader, vae, video and components (unless given), positive, negative, appearance, pose,
    segments, sample, decode, create, save.
    """
    ma = g.add("MagicAnimateLoader", at=at["loader"], temporal_checkpoint=TEMPORAL_CHECKPOINT,
               appearance_encoder=APPEARANCE_ENCODER, densepose_controlnet=DENSEPOSE_CONTROLNET, weight_dtype="auto")
    vae = g.add("VAELoader", at=at["vae"], vae_name=SD_VAE)
    if components is None:
        video = g.add("LoadVideo", title="DensePose video", at=at["video"], file=DEMO_VIDEO)
        components = g.add("GetVideoComponents", at=at["components"], video=video["VIDEO"])
    positive = g.add("CLIPTextEncode", title="Positive prompt (empty in the reference)", at=at["positive"], text="",
                     clip=ckpt["CLIP"])
    negative = g.add("CLIPTextEncode", title="Negative prompt (empty in the reference)", at=at["negative"], text="",
                     clip=ckpt["CLIP"])
    appearance = g.add("MagicAnimateAppearanceEncode", at=at["appearance"], appearance_encoder=ma["appearance_encoder"],
                       vae=vae["VAE"], image=reference, fit="stretch", width=512, height=512)
    pose = g.add("MagicAnimatePoseControl", at=at["pose"], control_net=ma["CONTROL_NET"],
                 pose_frames=pose_frames if pose_frames is not None else components["images"],
                 strength=1.0, start_percent=0.0, end_percent=1.0, fit="stretch")
    segments = g.add("MagicAnimateSegmentFuse", at=at["segments"], length=16, overlap=4, closed_loop=True,
                     fuse="average")
    latent = g.add("MagicAnimateTemporalSample", at=at["sample"], model=ma["MODEL"],
                   appearance=appearance["appearance"], pose=pose["pose"], positive=positive["CONDITIONING"],
                   negative=negative["CONDITIONING"], seed=1, steps=25, cfg=7.5, sampler_name="reference_ddim",
                   scheduler="normal", denoise=1.0, noise_mode="tiled", segments=segments["segments"])
    frames = g.add("VAEDecode", at=at["decode"], samples=latent["LATENT"], vae=vae["VAE"])
    clip = g.add("CreateVideo", at=at["create"], images=frames["IMAGE"], fps=components["fps"])
    g.add("SaveVideo", at=at["save"], video=clip["VIDEO"], filename_prefix="MagicAnimate/magicanimate", format="auto",
          codec="auto")


def magicanimate_basic() -> Graph:
    g = Graph("magicanimate_basic", "MagicAnimate: animate a reference photo with a DensePose video.")
    at = LAYOUTS[g.name]
    ckpt = g.add("CheckpointLoaderSimple", title="SD1.5 checkpoint (text encoder)", at=at["ckpt"],
                 ckpt_name=SD15_CHECKPOINT)
    image = g.add("LoadImage", title="Reference image", at=at["image"], image=DEMO_IMAGE)
    _animate(g, image["IMAGE"], ckpt, at)
    return g


def txt2img_then_animate() -> Graph:
    g = Graph("txt2img_then_animate",
              "SD1.5 text-to-image makes the reference photo, MagicAnimate animates it with a DensePose video.")
    at = LAYOUTS[g.name]
    ckpt = g.add("CheckpointLoaderSimple", title="Load Checkpoint (SD1.5)", at=at["ckpt"], ckpt_name=SD15_CHECKPOINT)
    prompt = g.add("CLIPTextEncode", title="Reference image prompt", at=at["prompt"], size=(300, 120),
                   text="a portrait photo of a woman, full body, plain background", clip=ckpt["CLIP"])
    negative = g.add("CLIPTextEncode", title="Reference image negative prompt", at=at["negative_prompt"],
                     size=(300, 120), text="blurry, low quality, deformed, cropped, watermark, text", clip=ckpt["CLIP"])
    empty = g.add("EmptyLatentImage", at=at["empty"], width=512, height=512, batch_size=1)
    sampled = g.add("KSampler", at=at["ksampler"], model=ckpt["MODEL"], seed=1, steps=25, cfg=7.0,
                    sampler_name="euler", scheduler="normal", positive=prompt["CONDITIONING"],
                    negative=negative["CONDITIONING"], latent_image=empty["LATENT"], denoise=1.0)
    image = g.add("VAEDecode", title="Reference image", at=at["reference"], samples=sampled["LATENT"],
                  vae=ckpt["VAE"])
    _animate(g, image["IMAGE"], ckpt, at)
    return g


def magicanimate_from_video() -> Graph:
    g = Graph("magicanimate_from_video",
              "MagicAnimate from an ordinary video: the DensePose Estimator of comfyui_controlnet_aux (viridis colour "
              "map, as MagicAnimate was trained) turns the video into DensePose frames, then the reference photo is "
              "animated with them. Needs the comfyui_controlnet_aux node pack.")
    at = LAYOUTS[g.name]
    ckpt = g.add("CheckpointLoaderSimple", title="SD1.5 checkpoint (text encoder)", at=at["ckpt"],
                 ckpt_name=SD15_CHECKPOINT)
    image = g.add("LoadImage", title="Reference image", at=at["image"], image=DEMO_IMAGE)
    video = g.add("LoadVideo", title="Ordinary video (a person moving)", at=at["video"], file=FROM_VIDEO_INPUT)
    frames = g.add("GetVideoComponents", title="Video frames", at=at["components"], size=(160, 110),
                   video=video["VIDEO"])
    densepose = g.add("DensePosePreprocessor", title="DensePose Estimator (comfyui_controlnet_aux)",
                      at=at["densepose"], image=frames["images"], model="densepose_r50_fpn_dl.torchscript",
                      cmap="Viridis (MagicAnimate)", resolution=512)
    _animate(g, image["IMAGE"], ckpt, at, pose_frames=densepose["IMAGE"], components=frames)
    return g


def multi_reference() -> Graph:
    g = Graph("multi_reference",
              "MagicAnimate with two reference photos of the same person (e.g. front and back), joined by Batch "
              "Images; chain more Batch Images for up to four.")
    at = LAYOUTS[g.name]
    ckpt = g.add("CheckpointLoaderSimple", title="SD1.5 checkpoint (text encoder)", at=at["ckpt"],
                 ckpt_name=SD15_CHECKPOINT)
    front = g.add("LoadImage", title="Reference photo 1 (front)", at=at["front"], image=DEMO_IMAGE)
    other = g.add("LoadImage", title="Reference photo 2 (back or side)", at=at["other"], image=DEMO_IMAGE)
    photos = g.add("ImageBatch", title="Reference photos (1 to 4)", at=at["photos"], image1=front["IMAGE"],
                   image2=other["IMAGE"])
    _animate(g, photos["IMAGE"], ckpt, at)
    return g


def pose_align() -> Graph:
    g = Graph("pose_align",
              "MagicAnimate with Pose Align: the driving DensePose video is scaled and shifted so that the body "
              "matches the DensePose of the reference photo (height and centre), one transform for the whole video.")
    at = LAYOUTS[g.name]
    ckpt = g.add("CheckpointLoaderSimple", title="SD1.5 checkpoint (text encoder)", at=at["ckpt"],
                 ckpt_name=SD15_CHECKPOINT)
    image = g.add("LoadImage", title="Reference image", at=at["image"], image=ALIGN_IMAGE)
    reference_pose = g.add("LoadImage", title="DensePose of the reference image", at=at["reference_pose"],
                           image=ALIGN_REFERENCE_POSE)
    video = g.add("LoadVideo", title="DensePose video", at=at["video"], file=DEMO_VIDEO)
    components = g.add("GetVideoComponents", at=at["components"], video=video["VIDEO"])
    aligned = g.add("MagicAnimatePoseAlign", at=at["aligned"], pose_frames=components["images"],
                    reference_pose=reference_pose["IMAGE"], mode="first-frame")
    _animate(g, image["IMAGE"], ckpt, at, pose_frames=aligned["pose_frames"], components=components)
    return g


#: Layouts: the ``pos`` of every node of each graph, by role (the graph's own nodes and :func:`_animate`'s). Loaders
#: and file inputs on the left, the nodes that feed Temporal Sample in the column before it, the outputs stepping down
#: to Save Video on the right; long links run through the free rows between nodes (rules: "UI layout" below).
LAYOUTS: dict[str, dict[str, tuple[int, int]]] = {
    "magicanimate_basic": {
        "ckpt": (350, 890), "image": (0, 20), "loader": (350, 500), "vae": (350, 310), "video": (0, 400),
        "components": (350, 150), "positive": (770, 580), "negative": (770, 970), "appearance": (770, 20),
        "pose": (770, 350), "segments": (770, 770), "sample": (1170, 510), "decode": (1500, 0),
        "create": (1620, 220), "save": (1780, 540),
    },
    "txt2img_then_animate": {
        "ckpt": (0, 230), "prompt": (340, 40), "negative_prompt": (340, 320), "empty": (340, 500),
        "ksampler": (740, 170), "reference": (960, 0), "loader": (730, 600), "vae": (740, 490), "video": (0, 890),
        "components": (340, 1090), "positive": (340, 790), "negative": (340, 940), "appearance": (1080, 230),
        "pose": (1080, 940), "segments": (1080, 1140), "sample": (1430, 740), "decode": (1760, 210),
        "create": (1880, 430), "save": (2040, 740),
    },
    "magicanimate_from_video": {
        "ckpt": (550, 970), "image": (0, 430), "video": (0, 0), "components": (350, 180), "densepose": (550, 380),
        "loader": (550, 640), "vae": (550, 0), "positive": (990, 870), "negative": (990, 1020),
        "appearance": (990, 70), "pose": (990, 310), "segments": (990, 680), "sample": (1390, 480),
        "decode": (1720, 0), "create": (1840, 230), "save": (2000, 550),
    },
    "multi_reference": {
        "ckpt": (350, 800), "front": (0, 0), "other": (0, 380), "photos": (350, 40), "loader": (350, 510),
        "vae": (350, 320), "video": (0, 760), "components": (350, 160), "positive": (770, 780),
        "negative": (770, 930), "appearance": (770, 50), "pose": (770, 350), "segments": (770, 590),
        "sample": (1170, 500), "decode": (1500, 40), "create": (1620, 260), "save": (1780, 570),
    },
    "pose_align": {
        "ckpt": (350, 540), "image": (0, 810), "reference_pose": (0, 430), "video": (0, 0), "components": (350, 140),
        "aligned": (690, 340), "loader": (690, 940), "vae": (690, 30), "positive": (690, 640),
        "negative": (690, 790), "appearance": (1110, 300), "pose": (1110, 500), "segments": (1110, 980),
        "sample": (1460, 690), "decode": (1790, 10), "create": (1910, 230), "save": (2070, 540),
    },
}


#: name -> builder of every shipped workflow (each becomes a template and an API file).
GRAPHS = {"magicanimate_basic": magicanimate_basic, "txt2img_then_animate": txt2img_then_animate,
          "magicanimate_from_video": magicanimate_from_video, "multi_reference": multi_reference,
          "pose_align": pose_align}

# ------------------------------------------------------------------------------------------------------------------
# API format


def _title(node: Node) -> str:
    return node.title or node.spec.display_name


def to_api(g: Graph) -> dict:
    prompt = {}
    for node in g.nodes:
        inputs = {}
        for inp in node.spec.inputs:
            if inp.name in node.values:
                value = node.values[inp.name]
                inputs[inp.name] = [str(value.node), value.slot] if isinstance(value, Out) else value
        prompt[str(node.id)] = {"class_type": node.class_type, "inputs": inputs, "_meta": {"title": _title(node)}}
    return prompt


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


# ------------------------------------------------------------------------------------------------------------------
# UI layout
#
# Every node is placed by hand (``at=``; the positions were found with a small search over the rules below). What
# :func:`check_layout` enforces, at build time:
#
# * nodes do not overlap (title bars included, :data:`NODE_GAP` apart);
# * no link runs behind a node: each link is drawn as the frontend draws it (a cubic Bezier from the output slot to the
#   input slot, control points ``max(30, distance / 4)`` straight out of the output and into the input), and it keeps
#   :data:`LINK_CLEARANCE` from every node's top and bottom (it may enter a node's side only as far as the slot dots);
# * the view the frontend opens a template with is readable at 1920x1080 (device pixel ratio 1, default settings):
#   the saved view for frontend 1.32 (:func:`saved_view`), the fitted view for newer ones (:func:`fitted_view`), at or
#   above :data:`MIN_SAVED_SCALE` / :data:`MIN_FITTED_SCALE`.
#
# The browser test (tests/browser/test_frontend.py) checks the same against the real frontends.

TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT: the title bar is drawn above a node's ``pos``
SLOT_HEIGHT = 20  # LiteGraph.NODE_SLOT_HEIGHT: sockets (left) and outputs (right) one per row from the top
WIDGET_ROW = 24  # a widget's row height; a widget driven by a link has its input dot on its row
SLOT_INSET = 12  # slot dots sit 9-10 units inside a node's left / right edge
NODE_GAP = 20  # between any two nodes
LINK_CLEARANCE = 8  # between a link and the top / bottom of a node it passes

#: The part of a 1920x1080 window (device pixel ratio 1, frontend 1.32.9 with default settings) where the canvas is
#: not covered: right of the 48 px sidebar, below the workflow tabs and the breadcrumb / Run bar (and the "Nodes 2.0"
#: banner), left of the window edge, above the zoom controls. The browser test checks it against the real page.
VIEW_LEFT, VIEW_TOP, VIEW_RIGHT, VIEW_BOTTOM = 80, 140, 1900, 1050
#: The minimap's corner (bottom right, shown by default): nothing may be drawn under it.
MINIMAP_LEFT, MINIMAP_TOP = 1650, 820
#: The saved zoom must be at least this: the frontend (1.32.9) draws nodes as blank boxes (no text) below
#: ``MinFontSizeForLOD / (NODE_TEXT_SIZE * sqrt(devicePixelRatio))`` = 8 / 14 = 0.571 at the defaults; the margin
#: keeps titles readable (8.7 px at least).
MIN_SAVED_SCALE = 0.62
#: Newer frontends (1.49) open a template from the Templates dialog fitted, whatever its saved view:
#: ``DragAndScale.fitToBounds`` of the bounds of all nodes plus 10 units, zoom ``FIT_ZOOM`` of the 1920x1080 canvas
#: (the whole window: the bars are drawn over it), centred. Same text threshold (0.571); this margin keeps titles at
#: 8.4 px at least.
FIT_ZOOM = 0.75
MIN_FITTED_SCALE = 0.6
#: The minimap of those frontends (bottom right of the window, shown by default), in window pixels.
FIT_MINIMAP_LEFT, FIT_MINIMAP_TOP = 1660, 820


def _node_size(node: Node) -> list[int]:
    return list(node.size or node.spec.size or (node.spec.width, 46 + 22 * len(node.spec.outputs)))


def _layout(g: Graph) -> dict[int, list[int]]:
    unplaced = [f"{n.id} {n.class_type}" for n in g.nodes if n.at is None]
    if unplaced:
        raise ValueError(f"workflow {g.name}: nodes without a position (at=...): {unplaced}")
    return {n.id: list(n.at) for n in g.nodes}


def _slot_pos(ui_node: dict, slot: int, output: bool) -> tuple[float, float]:
    """Where the frontend draws a UI node's input or output dot (canvas units)."""
    x, y = ui_node["pos"]
    if output:
        return x + ui_node["size"][0] - 9, y + 14 + SLOT_HEIGHT * slot
    inp = ui_node["inputs"][slot]
    if "widget" not in inp:
        return x + 10, y + 14 + SLOT_HEIGHT * slot
    spec = NODE_SPECS[ui_node["type"]]
    rows = max(sum(1 for i in spec.inputs if not i.widget), len(spec.outputs))
    row = widget_index(ui_node["type"], inp["name"])  # control / upload entries are widgets with rows too
    return x + 10, y + SLOT_HEIGHT * rows + 16 + WIDGET_ROW * row


def link_curve(start: tuple[float, float], end: tuple[float, float], steps: int = 40) -> list[tuple[float, float]]:
    """Points of a link as the frontend's spline draws it (LiteGraph ``calculateControlPoints``), ends excluded."""
    (x0, y0), (x3, y3) = start, end
    c = max(30.0, ((x3 - x0) ** 2 + (y3 - y0) ** 2) ** 0.5 * 0.25)
    x1, x2 = x0 + c, x3 - c
    points = []
    for k in range(1, steps):
        t = k / steps
        u = 1 - t
        points.append((u ** 3 * x0 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t ** 3 * x3,
                       u ** 3 * y0 + 3 * u * u * t * y0 + 3 * u * t * t * y3 + t ** 3 * y3))
    return points


def fitted_view(nodes: list[dict]) -> dict:
    """The view newer frontends open a template with (``DragAndScale.fitToBounds``, see :data:`FIT_ZOOM`)."""
    x0, y0, x1, y1 = bounds(nodes)
    w, h = x1 - x0 + 20, y1 - y0 + 20
    scale = FIT_ZOOM * min(1920 / max(w, 300), 1080 / max(h, 300))
    return {"scale": scale, "offset": [-(x0 - 10) - w / 2 + 960 / scale, -(y0 - 10) - h / 2 + 540 / scale]}


def check_layout(ui: dict) -> list[str]:
    """What is wrong with a UI workflow's layout (see "UI layout" above): overlapping nodes, links behind nodes, a view
    too small to read or a node under the minimap of the fitted view."""
    nodes = {n["id"]: n for n in ui["nodes"]}
    rects = {i: (n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for i, n in nodes.items()}
    name = {i: f"{i} {n.get('title') or NODE_SPECS[n['type']].display_name}" for i, n in nodes.items()}
    problems = []
    ids = sorted(rects)
    for k, a in enumerate(ids):
        for b in ids[k + 1:]:
            (al, at, ar, ab), (bl, bt, br, bb) = rects[a], rects[b]
            if min(ar, br) - max(al, bl) > -NODE_GAP and min(ab, bb) - max(at, bt) > -NODE_GAP:
                problems.append(f"nodes {name[a]} and {name[b]} are closer than {NODE_GAP}")
    for link_id, src, src_slot, dst, dst_slot, _type in ui["links"]:
        curve = link_curve(_slot_pos(nodes[src], src_slot, True), _slot_pos(nodes[dst], dst_slot, False))
        behind = sorted({name[i] for i, (left, top, right, bottom) in rects.items() for x, y in curve
                         if left + SLOT_INSET < x < right - SLOT_INSET
                         and top - LINK_CLEARANCE < y < bottom + LINK_CLEARANCE})
        if behind:
            problems.append(f"link {link_id} ({name[src]} -> {name[dst]}) runs behind {behind}")
    view = fitted_view(ui["nodes"])
    if view["scale"] < MIN_FITTED_SCALE:
        problems.append(f"the fitted view's zoom {view['scale']:.3f} is below {MIN_FITTED_SCALE}: the graph is too "
                        f"wide or tall")
    s, (ox, oy) = view["scale"], view["offset"]
    for i, (_left, _top, right, bottom) in rects.items():
        if (right + ox) * s > FIT_MINIMAP_LEFT and (bottom + oy) * s > FIT_MINIMAP_TOP:
            problems.append(f"{name[i]} lies under the minimap in the fitted view")
    return problems


def bounds(nodes: list[dict]) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of UI nodes in canvas units, title bars included."""
    return (min(n["pos"][0] for n in nodes), min(n["pos"][1] for n in nodes) - TITLE_HEIGHT,
            max(n["pos"][0] + n["size"][0] for n in nodes), max(n["pos"][1] + n["size"][1] for n in nodes))


def saved_view(nodes: list[dict], name: str = "") -> dict:
    """``extra.ds`` of a UI workflow: the largest zoom (2 decimals, at most 1) at which every node lies in the
    uncovered part of a 1920x1080 window, the graph centred in it. Raises ValueError below :data:`MIN_SAVED_SCALE`."""
    x0, y0, x1, y1 = bounds(nodes)
    width, height = VIEW_RIGHT - VIEW_LEFT, VIEW_BOTTOM - VIEW_TOP
    scale = int(min(1.0, width / (x1 - x0), height / (y1 - y0)) * 100) / 100
    while scale >= MIN_SAVED_SCALE:
        left = VIEW_LEFT + (width - (x1 - x0) * scale) / 2
        top = VIEW_TOP + (height - (y1 - y0) * scale) / 2
        offset = [round(left / scale - x0, 1), round(top / scale - y0, 1)]
        under_minimap = any((n["pos"][0] + n["size"][0] + offset[0]) * scale > MINIMAP_LEFT
                            and (n["pos"][1] + n["size"][1] + offset[1]) * scale > MINIMAP_TOP for n in nodes)
        if not under_minimap:
            return {"scale": scale, "offset": offset}
        scale = round(scale - 0.01, 2)
    raise ValueError(f"workflow {name}: {x1 - x0:.0f}x{y1 - y0:.0f} canvas units do not fit a 1920x1080 window at "
                     f"zoom {MIN_SAVED_SCALE} (the frontend would hide node text); place the nodes closer (at=...) or "
                     f"use narrower nodes")


def to_ui(g: Graph) -> dict:
    links = []
    link_of: dict[tuple[int, str], int] = {}
    out_links: dict[tuple[int, int], list[int]] = {}
    for target, name, src in g.edges():
        link_id = len(links) + 1
        link_of[(target.id, name)] = link_id
        out_links.setdefault((src.node, src.slot), []).append(link_id)
        links.append([link_id, src.node, src.slot, target.id, None, g.node(src.node).spec.outputs[src.slot][1]])
    slot_of_link: dict[int, int] = {}
    pos = _layout(g)
    ui_nodes = []
    for order, node in enumerate(g.nodes):
        spec = node.spec
        inputs = []
        for inp in spec.inputs:  # sockets first, in input order
            if not inp.widget:
                entry = {"name": inp.name, "type": inp.type}
                if inp.optional:
                    entry["shape"] = 7
                entry["link"] = link_of.get((node.id, inp.name))
                inputs.append(entry)
        for inp in spec.inputs:  # then widgets driven by a link
            if inp.widget and (node.id, inp.name) in link_of:
                inputs.append({"name": inp.name, "type": inp.type, "widget": {"name": inp.name},
                               "link": link_of[(node.id, inp.name)]})
        for slot, entry in enumerate(inputs):
            if entry["link"] is not None:
                slot_of_link[entry["link"]] = slot
        outputs = [{"name": name, "type": type_, "links": out_links.get((node.id, slot))}
                   for slot, (name, type_) in enumerate(spec.outputs)]
        if spec.pack:
            properties = {"cnr_id": PACK_REGISTRY_ID}
        elif spec.cnr_id:
            properties = {"cnr_id": spec.cnr_id}
        else:
            properties = {"cnr_id": "comfy-core", "ver": CORE_VERSION}
        properties["Node name for S&R"] = node.class_type
        ui_node = {"id": node.id, "type": node.class_type, "pos": pos[node.id], "size": _node_size(node), "flags": {},
                   "order": order, "mode": 0, "inputs": inputs, "outputs": outputs}
        if node.title:
            ui_node["title"] = node.title
        ui_node["properties"] = properties
        ui_node["widgets_values"] = _widgets_values(spec, node.values)
        ui_nodes.append(ui_node)
    for link in links:
        link[4] = slot_of_link[link[0]]
    problems = check_layout({"nodes": ui_nodes, "links": links})
    if problems:
        raise ValueError(f"workflow {g.name}: layout problems (change the at=... positions):\n  "
                         + "\n  ".join(problems))
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{PACK_REGISTRY_ID}/workflows/{g.name}")),
        "revision": 0,
        "last_node_id": len(g.nodes),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": saved_view(ui_nodes, g.name), "info": {"description": g.description}},
        "version": 0.4,
    }


def api_from_ui(ui: dict) -> dict:
    """API prompt of a UI workflow made of :data:`NODE_SPECS` nodes (a tiny graphToPrompt, for tests and checks)."""
    links = {link[0]: link for link in ui["links"]}
    prompt = {}
    for node in sorted(ui["nodes"], key=lambda n: n["id"]):
        if node.get("mode", 0) != 0:
            continue
        spec = NODE_SPECS[node["type"]]
        values = list(node["widgets_values"])
        linked = {i["name"]: links[i["link"]] for i in node["inputs"] if i.get("link") is not None}
        inputs = {}
        for inp in spec.inputs:
            if inp.widget:
                inputs[inp.name] = values.pop(0)
                del values[:inp.control + inp.upload]
            if inp.name in linked:
                link = linked[inp.name]
                inputs[inp.name] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title") or spec.display_name}}
    return prompt


def with_densepose_video(prompt: dict, video: str = DEMO_VIDEO) -> dict:
    """A copy of an API prompt whose DensePose estimators are replaced by a DensePose video (LoadVideo ``video`` ->
    GetVideoComponents, under the estimator's id, so that its ``[id, 0]`` IMAGE links now carry the video's frames).

    For running the MagicAnimate part of ``magicanimate_from_video`` without comfyui_controlnet_aux (tests).
    """
    out = json.loads(json.dumps(prompt))
    next_id = max(int(k) for k in out) + 1
    for node_id, node in list(out.items()):
        if node["class_type"] == "DensePosePreprocessor":
            loader = str(next_id)
            next_id += 1
            out[loader] = {"class_type": "LoadVideo", "inputs": {"file": video},
                           "_meta": {"title": "DensePose video (stands in for the estimator)"}}
            out[node_id] = {"class_type": "GetVideoComponents", "inputs": {"video": [loader, 0]},
                            "_meta": {"title": node["_meta"]["title"]}}
    return out


# ------------------------------------------------------------------------------------------------------------------


def dumps(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def rendered(ui_dir: Path = UI_DIR, api_dir: Path = API_DIR) -> dict[Path, str]:
    """Every output file and the text it should have."""
    files = {}
    for name, build in GRAPHS.items():
        g = build()
        files[api_path(name, api_dir)] = dumps(to_api(g))
        files[ui_path(name, ui_dir)] = dumps(to_ui(g))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1), write nothing")
    parser.add_argument("--out", type=Path, default=None,
                        help="write both formats into this directory instead (default: example_workflows/ for UI, "
                             "workflows/api/ for API files)")
    args = parser.parse_args(argv)
    stale = []
    files = rendered(args.out, args.out) if args.out else rendered()
    for path, text in files.items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    verb = "stale" if args.check else "written"
    for path in stale:
        print(f"{verb}: {path}")
    if not stale:
        print("all workflow files up to date")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
