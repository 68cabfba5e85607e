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
entry in :data:`NODE_SPECS`). The layout is automatic: columns left to right by link depth; ``below=node`` stacks a
node under another one in the same column, ``column=n`` pushes a node right to at least column n. The saved view is
the largest zoom at which the whole graph fits a 1920x1080 window beside the frontend's sidebar and under its top
bars; it must stay at or above :data:`MIN_SAVED_SCALE` (above the frontend's default text level-of-detail
threshold), or the build fails.

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
    size: tuple[int, int] | None = None  # UI size override (nodes with previews / multiline text)
    width: int = 320  # UI width when size is not given (wider for long combo values: labels stay readable)

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
        width=400),
    "CLIPTextEncode": NodeSpec(
        "CLIP Text Encode (Prompt)", (W("text", "STRING"), S("clip", "CLIP")), (("CONDITIONING", "CONDITIONING"),),
        size=(400, 150)),
    "VAELoader": NodeSpec("Load VAE", (W("vae_name", "COMBO"),), (("VAE", "VAE"),)),
    "LoadImage": NodeSpec(
        "Load Image", (W("image", "COMBO", upload=True),), (("IMAGE", "IMAGE"), ("MASK", "MASK")), size=(320, 380)),
    "LoadVideo": NodeSpec("Load Video", (W("file", "COMBO", upload=True),), (("VIDEO", "VIDEO"),), size=(320, 400)),
    "GetVideoComponents": NodeSpec(
        "Get Video Components", (S("video", "VIDEO"),), (("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")),
        width=240),
    "EmptyLatentImage": NodeSpec(
        "Empty Latent Image", (W("width", "INT", 512), W("height", "INT", 512), W("batch_size", "INT", 1)),
        (("LATENT", "LATENT"),)),
    "KSampler": NodeSpec(
        "KSampler",
        (S("model", "MODEL"), W("seed", "INT", 0, control=True), W("steps", "INT", 20), W("cfg", "FLOAT", 8.0),
         W("sampler_name", "COMBO"), W("scheduler", "COMBO"), S("positive", "CONDITIONING"),
         S("negative", "CONDITIONING"), S("latent_image", "LATENT"), W("denoise", "FLOAT", 1.0)),
        (("LATENT", "LATENT"),)),
    "ImageBatch": NodeSpec("Batch Images", (S("image1", "IMAGE"), S("image2", "IMAGE")), (("IMAGE", "IMAGE"),)),
    "VAEDecode": NodeSpec("VAE Decode", (S("samples", "LATENT"), S("vae", "VAE")), (("IMAGE", "IMAGE"),), width=240),
    "CreateVideo": NodeSpec(
        "Create Video", (S("images", "IMAGE"), W("fps", "FLOAT", 30.0), S("audio", "AUDIO", optional=True)),
        (("VIDEO", "VIDEO"),), width=240),
    "SaveVideo": NodeSpec(
        "Save Video",
        (S("video", "VIDEO"), W("filename_prefix", "STRING", "video/ComfyUI"), W("format", "COMBO", "auto"),
         W("codec", "COMBO", "auto")),
        (), size=(400, 460)),
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
        pack=True, width=400),
    "MagicAnimateAppearanceEncode": NodeSpec(
        "MagicAnimate Appearance Encode",
        (S("appearance_encoder", "MAGICANIMATE_APPEARANCE_ENCODER"), S("vae", "VAE"), S("image", "IMAGE"),
         W("fit", "COMBO", "stretch"), W("width", "INT", 512), W("height", "INT", 512)),
        (("appearance", "MAGICANIMATE_APPEARANCE"),), pack=True),
    "MagicAnimatePoseControl": NodeSpec(
        "Pose Control (DensePose video)",
        (S("control_net", "CONTROL_NET"), S("pose_frames", "IMAGE"), W("strength", "FLOAT", 1.0),
         W("start_percent", "FLOAT", 0.0), W("end_percent", "FLOAT", 1.0), W("fit", "COMBO", "stretch")),
        (("pose", "MAGICANIMATE_POSE"),), pack=True),
    "MagicAnimateSegmentFuse": NodeSpec(
        "MagicAnimate Segment Fuse",
        (W("length", "INT", 16), W("overlap", "INT", 4), W("closed_loop", "BOOLEAN", True),
         W("fuse", "COMBO", "average")),
        (("segments", "MAGICANIMATE_SEGMENTS"),), pack=True),
    "MagicAnimateTemporalSample": NodeSpec(
        "Temporal Sample (dance video)",
        (S("model", "MODEL"), S("appearance", "MAGICANIMATE_APPEARANCE"), S("pose", "MAGICANIMATE_POSE"),
         S("positive", "CONDITIONING"), S("negative", "CONDITIONING"), W("seed", "INT", 1, control=True),
         W("steps", "INT", 25), W("cfg", "FLOAT", 7.5), W("sampler_name", "COMBO", "reference_ddim"),
         W("scheduler", "COMBO", "normal"), W("denoise", "FLOAT", 1.0), W("noise_mode", "COMBO", "tiled"),
         S("segments", "MAGICANIMATE_SEGMENTS", optional=True), S("latent", "LATENT", optional=True),
         S("noise", "NOISE", optional=True)),
        (("LATENT", "LATENT"),), pack=True),
    "MagicAnimatePoseAlign": NodeSpec(
        "MagicAnimate Pose Align",
        (S("pose_frames", "IMAGE"), S("reference_pose", "IMAGE"), W("mode", "COMBO", "first-frame")),
        (("pose_frames", "IMAGE"),), pack=True),
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
    below: int | None = None  # layout hint: id of the node this one is stacked under (same column)
    column: int | None = None  # layout hint: at least this column (frees room in the columns to its left)

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

    def add(self, class_type: str, title: str | None = None, below: Node | None = None, column: int | None = None,
            **values: Any) -> Node:
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
        node = Node(len(self.nodes) + 1, class_type, title, values, below.id if below is not None else None, column)
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


def _animate(g: Graph, reference: Out, ckpt: Node, pose_frames: Out | None = None,
             components: Node | None = None) -> None:
    """The MagicAnimate part shared by the graphs: reference IMAGE + DensePose frames -> saved mp4.

    ``pose_frames``: DensePose frames made elsewhere in the graph, with ``components`` the GetVideoComponents whose
    fps the mp4 keeps; by default a LoadVideo of a DensePose video provides both.
    """
    ma = g.add("MagicAnimateLoader", temporal_checkpoint=TEMPORAL_CHECKPOINT, appearance_encoder=APPEARANCE_ENCODER,
               densepose_controlnet=DENSEPOSE_CONTROLNET, weight_dtype="auto")
    vae = g.add("VAELoader", column=1, vae_name=SD_VAE)
    if components is None:
        video = g.add("LoadVideo", title="DensePose video", file=DEMO_VIDEO)
        components = g.add("GetVideoComponents", video=video["VIDEO"])
    positive = g.add("CLIPTextEncode", title="Positive prompt (empty in the reference)", text="",
                     clip=ckpt["CLIP"])
    negative = g.add("CLIPTextEncode", title="Negative prompt (empty in the reference)", text="",
                     clip=ckpt["CLIP"])
    appearance = g.add("MagicAnimateAppearanceEncode", column=2, appearance_encoder=ma["appearance_encoder"],
                       vae=vae["VAE"], image=reference, fit="stretch", width=512, height=512)
    pose = g.add("MagicAnimatePoseControl", control_net=ma["CONTROL_NET"],
                 pose_frames=pose_frames if pose_frames is not None else components["images"],
                 strength=1.0, start_percent=0.0, end_percent=1.0, fit="stretch")
    segments = g.add("MagicAnimateSegmentFuse", length=16, overlap=4, closed_loop=True, fuse="average")
    latent = g.add("MagicAnimateTemporalSample", model=ma["MODEL"], appearance=appearance["appearance"],
                   pose=pose["pose"], positive=positive["CONDITIONING"], negative=negative["CONDITIONING"], seed=1,
                   steps=25, cfg=7.5, sampler_name="reference_ddim", scheduler="normal", denoise=1.0,
                   noise_mode="tiled", segments=segments["segments"])
    frames = g.add("VAEDecode", samples=latent["LATENT"], vae=vae["VAE"])
    clip = g.add("CreateVideo", below=frames, images=frames["IMAGE"], fps=components["fps"])
    g.add("SaveVideo", video=clip["VIDEO"], filename_prefix="MagicAnimate/magicanimate", format="auto", codec="auto")


def magicanimate_basic() -> Graph:
    g = Graph("magicanimate_basic", "MagicAnimate: animate a reference photo with a DensePose video.")
    ckpt = g.add("CheckpointLoaderSimple", title="SD1.5 checkpoint (text encoder)",
                 ckpt_name=SD15_CHECKPOINT)
    image = g.add("LoadImage", title="Reference image", column=1, image=DEMO_IMAGE)
    _animate(g, image["IMAGE"], ckpt)
    return g


def txt2img_then_animate() -> Graph:
    g = Graph("txt2img_then_animate",
              "SD1.5 text-to-image makes the reference photo, MagicAnimate animates it with a DensePose video.")
    ckpt = g.add("CheckpointLoaderSimple", title="Load Checkpoint (SD1.5)", ckpt_name=SD15_CHECKPOINT)
    prompt = g.add("CLIPTextEncode", title="Reference image prompt",
                   text="a portrait photo of a woman, full body, plain background", clip=ckpt["CLIP"])
    negative = g.add("CLIPTextEncode", title="Reference image negative prompt",
                     text="blurry, low quality, deformed, cropped, watermark, text", clip=ckpt["CLIP"])
    empty = g.add("EmptyLatentImage", width=512, height=512, batch_size=1)
    sampled = g.add("KSampler", model=ckpt["MODEL"], seed=1, steps=25, cfg=7.0, sampler_name="euler",
                    scheduler="normal", positive=prompt["CONDITIONING"], negative=negative["CONDITIONING"],
                    latent_image=empty["LATENT"], denoise=1.0)
    image = g.add("VAEDecode", title="Reference image", below=sampled, samples=sampled["LATENT"],
                  vae=ckpt["VAE"])
    _animate(g, image["IMAGE"], ckpt)
    return g


def magicanimate_from_video() -> Graph:
    g = Graph("magicanimate_from_video",
              "MagicAnimate from an ordinary video: the DensePose Estimator of comfyui_controlnet_aux (viridis colour "
              "map, as MagicAnimate was trained) turns the video into DensePose frames, then the reference photo is "
              "animated with them. Needs the comfyui_controlnet_aux node pack.")
    ckpt = g.add("CheckpointLoaderSimple", title="SD1.5 checkpoint (text encoder)",
                 ckpt_name=SD15_CHECKPOINT)
    image = g.add("LoadImage", title="Reference image", column=1, image=DEMO_IMAGE)
    video = g.add("LoadVideo", title="Ordinary video (a person moving)", file=FROM_VIDEO_INPUT)
    frames = g.add("GetVideoComponents", title="Video frames", video=video["VIDEO"])
    densepose = g.add("DensePosePreprocessor", title="DensePose Estimator (comfyui_controlnet_aux)",
                      image=frames["images"], model="densepose_r50_fpn_dl.torchscript",
                      cmap="Viridis (MagicAnimate)", resolution=512)
    _animate(g, image["IMAGE"], ckpt, pose_frames=densepose["IMAGE"], components=frames)
    return g


def multi_reference() -> Graph:
    g = Graph("multi_reference",
              "MagicAnimate with two reference photos of the same person (e.g. front and back), joined by Batch "
              "Images; chain more Batch Images for up to four.")
    ckpt = g.add("CheckpointLoaderSimple", title="SD1.5 checkpoint (text encoder)", ckpt_name=SD15_CHECKPOINT)
    front = g.add("LoadImage", title="Reference photo 1 (front)", column=1, image=DEMO_IMAGE)
    other = g.add("LoadImage", title="Reference photo 2 (back or side)", below=ckpt,
                  image=DEMO_IMAGE)
    photos = g.add("ImageBatch", title="Reference photos (1 to 4)", image1=front["IMAGE"], image2=other["IMAGE"])
    _animate(g, photos["IMAGE"], ckpt)
    return g


def pose_align() -> Graph:
    g = Graph("pose_align",
              "MagicAnimate with Pose Align: the driving DensePose video is scaled and shifted so that the body "
              "matches the DensePose of the reference photo (height and centre), one transform for the whole video.")
    ckpt = g.add("CheckpointLoaderSimple", title="SD1.5 checkpoint (text encoder)", ckpt_name=SD15_CHECKPOINT)
    image = g.add("LoadImage", title="Reference image", column=1, image=ALIGN_IMAGE)
    reference_pose = g.add("LoadImage", title="DensePose of the reference image", below=ckpt,
                           image=ALIGN_REFERENCE_POSE)
    video = g.add("LoadVideo", title="DensePose video", file=DEMO_VIDEO)
    components = g.add("GetVideoComponents", video=video["VIDEO"])
    aligned = g.add("MagicAnimatePoseAlign", pose_frames=components["images"], reference_pose=reference_pose["IMAGE"],
                    mode="first-frame")
    _animate(g, image["IMAGE"], ckpt, pose_frames=aligned["pose_frames"], components=components)
    return g


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


#: Sources that stay in the first column (model and file loaders); other sources (settings such as SegmentFuse or
#: EmptyLatentImage) move right, next to their first consumer.
LEFT_COLUMN = {"CheckpointLoaderSimple", "VAELoader", "MagicAnimateLoader", "LoadImage", "LoadVideo"}


def _depths(g: Graph) -> dict[int, int]:
    """Column of each node: longest path from a source; settings-only sources sit just before their first consumer;
    a node with a ``below`` hint shares the column of the node it is stacked under."""
    depth: dict[int, int] = {}
    for node in g.nodes:  # ids are in topological order (inputs must exist when a node is added)
        parents = [v.node for v in node.values.values() if isinstance(v, Out)]
        depth[node.id] = (depth[node.below] if node.below is not None
                          else max(1 + max((depth[p] for p in parents), default=-1), node.column or 0))
    consumers: dict[int, list[int]] = {n.id: [] for n in g.nodes}
    for target, _name, src in g.edges():
        consumers[src.node].append(target.id)
    for node in g.nodes:
        is_source = not any(isinstance(v, Out) for v in node.values.values())
        if is_source and node.class_type not in LEFT_COLUMN and node.column is None and consumers[node.id]:
            depth[node.id] = min(depth[c] for c in consumers[node.id]) - 1
    return depth


def _size(spec: NodeSpec) -> list[int]:
    if spec.size:
        return list(spec.size)
    sockets = sum(1 for i in spec.inputs if not i.widget)
    return [spec.width, 46 + 22 * max(sockets, len(spec.outputs)) + 26 * len(spec.widgets)]


TITLE_HEIGHT = 30  # LiteGraph draws a node's title bar above its ``pos``
GAP_X = 50  # between columns (room for the links)
GAP_Y = 20 + TITLE_HEIGHT  # between stacked nodes

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


def _layout(g: Graph) -> dict[int, list[int]]:
    depth = _depths(g)
    columns: dict[int, list[Node]] = {}
    for node in g.nodes:
        if node.below is None:
            columns.setdefault(depth[node.id], []).append(node)
    for node in g.nodes:  # stacked nodes go right under the node they are stacked below
        if node.below is not None:
            column = columns[depth[node.id]]
            column.insert(next(i for i, n in enumerate(column) if n.id == node.below) + 1, node)
    pos: dict[int, list[int]] = {}
    x = 0
    for col in sorted(columns):
        y = 0
        for node in columns[col]:
            pos[node.id] = [x, y]
            y += _size(node.spec)[1] + GAP_Y
        x += max(_size(n.spec)[0] for n in columns[col]) + GAP_X
    return pos


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
                     f"zoom {MIN_SAVED_SCALE} (the frontend would hide node text); stack nodes with below=... or use "
                     f"narrower nodes")


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
        ui_node = {"id": node.id, "type": node.class_type, "pos": pos[node.id], "size": _size(spec), "flags": {},
                   "order": order, "mode": 0, "inputs": inputs, "outputs": outputs}
        if node.title:
            ui_node["title"] = node.title
        ui_node["properties"] = properties
        ui_node["widgets_values"] = _widgets_values(spec, node.values)
        ui_nodes.append(ui_node)
    for link in links:
        link[4] = slot_of_link[link[0]]
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
