"""Generate the shipped example workflows, in both ComfyUI formats, from one Python description per graph.

Outputs (committed; do not edit them by hand)::

    workflows/magicanimate_basic.api.json     API format (what POST /prompt and scripts/animate.py run)
    workflows/magicanimate_basic.json         UI format (drag-and-drop into the ComfyUI editor)
    workflows/txt2img_then_animate.api.json
    workflows/txt2img_then_animate.json
    workflows/multi_reference.api.json       several reference photos of one person (beyond the reference)
    workflows/multi_reference.json
    workflows/pose_align.api.json            driving motion fitted to the photo's body (beyond the reference)
    workflows/pose_align.json

Re-run after changing a graph below or a node's inputs::

    python workflows/build_workflows.py            # rewrite the JSON files
    python workflows/build_workflows.py --check    # exit 1 if the committed files are stale (tests do the same)

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

# ------------------------------------------------------------------------------------------------------------------
# Model file names (relative to ComfyUI's models/<folder>/), shared by both graphs and by scripts/animate.py.

SD15_CHECKPOINT = "v1-5-pruned-emaonly.safetensors"  # models/checkpoints/
SD_VAE = "vae-ft-mse-840000-ema-pruned.safetensors"  # models/vae/
TEMPORAL_CHECKPOINT = "temporal_attention.ckpt"  # models/magicanimate/
APPEARANCE_ENCODER = "appearance_encoder"  # models/magicanimate/<folder>/ (config.json + weights)
DENSEPOSE_CONTROLNET = "densepose_controlnet"  # models/magicanimate/<folder>/

DEMO_IMAGE = "monalisa.png"  # example_inputs/
DEMO_VIDEO = "running.mp4"  # example_inputs/ (DensePose renderings, 42 frames, 25 fps, 512x512)
ALIGN_IMAGE = "demo4.jpg"  # example_inputs/ (MagicAnimate's demo4.png at 512x512)
ALIGN_REFERENCE_POSE = "demo4_densepose.png"  # example_inputs/ (first frame of MagicAnimate's demo4 DensePose video)
DEMO_INPUTS = (DEMO_IMAGE, DEMO_VIDEO, ALIGN_IMAGE, ALIGN_REFERENCE_POSE)  # what the shipped graphs load

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
    pack: bool = False  # a node of this pack (else ComfyUI core)
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
        "Get Video Components", (S("video", "VIDEO"),), (("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT"))),
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
    "VAEDecode": NodeSpec("VAE Decode", (S("samples", "LATENT"), S("vae", "VAE")), (("IMAGE", "IMAGE"),)),
    "CreateVideo": NodeSpec(
        "Create Video", (S("images", "IMAGE"), W("fps", "FLOAT", 30.0), S("audio", "AUDIO", optional=True)),
        (("VIDEO", "VIDEO"),)),
    "SaveVideo": NodeSpec(
        "Save Video",
        (S("video", "VIDEO"), W("filename_prefix", "STRING", "video/ComfyUI"), W("format", "COMBO", "auto"),
         W("codec", "COMBO", "auto")),
        (), size=(480, 520)),
    # --- this pack (nodes/*.py) ---
    "MagicAnimateLoader": NodeSpec(
        "Load MagicAnimate",
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
        "MagicAnimate Pose Control",
        (S("control_net", "CONTROL_NET"), S("pose_frames", "IMAGE"), W("strength", "FLOAT", 1.0),
         W("start_percent", "FLOAT", 0.0), W("end_percent", "FLOAT", 1.0), W("fit", "COMBO", "stretch")),
        (("pose", "MAGICANIMATE_POSE"),), pack=True),
    "MagicAnimateSegmentFuse": NodeSpec(
        "MagicAnimate Segment Fuse",
        (W("length", "INT", 16), W("overlap", "INT", 4), W("closed_loop", "BOOLEAN", True),
         W("fuse", "COMBO", "average")),
        (("segments", "MAGICANIMATE_SEGMENTS"),), pack=True),
    "MagicAnimateTemporalSample": NodeSpec(
        "MagicAnimate Temporal Sample",
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

    def add(self, class_type: str, title: str | None = None, **values: Any) -> Node:
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
        node = Node(len(self.nodes) + 1, class_type, title, values)
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
# The two shipped graphs


def _animate(g: Graph, reference: Out, ckpt: Node, reference_pose: Out | None = None) -> None:
    """The MagicAnimate part shared by the graphs: reference IMAGE + DensePose video -> saved mp4.

    With ``reference_pose`` (a DensePose rendering of the reference photo), Pose Align fits the video to it first.
    """
    ma = g.add("MagicAnimateLoader", temporal_checkpoint=TEMPORAL_CHECKPOINT, appearance_encoder=APPEARANCE_ENCODER,
               densepose_controlnet=DENSEPOSE_CONTROLNET, weight_dtype="auto")
    vae = g.add("VAELoader", vae_name=SD_VAE)
    video = g.add("LoadVideo", title="DensePose video", file=DEMO_VIDEO)
    components = g.add("GetVideoComponents", video=video["VIDEO"])
    positive = g.add("CLIPTextEncode", title="Positive prompt (empty in the reference)", text="",
                     clip=ckpt["CLIP"])
    negative = g.add("CLIPTextEncode", title="Negative prompt (empty in the reference)", text="",
                     clip=ckpt["CLIP"])
    appearance = g.add("MagicAnimateAppearanceEncode", appearance_encoder=ma["appearance_encoder"], vae=vae["VAE"],
                       image=reference, fit="stretch", width=512, height=512)
    pose_frames = components["images"]
    if reference_pose is not None:
        pose_frames = g.add("MagicAnimatePoseAlign", pose_frames=pose_frames, reference_pose=reference_pose,
                            mode="first-frame")["pose_frames"]
    pose = g.add("MagicAnimatePoseControl", control_net=ma["CONTROL_NET"], pose_frames=pose_frames,
                 strength=1.0, start_percent=0.0, end_percent=1.0, fit="stretch")
    segments = g.add("MagicAnimateSegmentFuse", length=16, overlap=4, closed_loop=True, fuse="average")
    latent = g.add("MagicAnimateTemporalSample", model=ma["MODEL"], appearance=appearance["appearance"],
                   pose=pose["pose"], positive=positive["CONDITIONING"], negative=negative["CONDITIONING"], seed=1,
                   steps=25, cfg=7.5, sampler_name="reference_ddim", scheduler="normal", denoise=1.0,
                   noise_mode="tiled", segments=segments["segments"])
    frames = g.add("VAEDecode", samples=latent["LATENT"], vae=vae["VAE"])
    clip = g.add("CreateVideo", images=frames["IMAGE"], fps=components["fps"])
    g.add("SaveVideo", video=clip["VIDEO"], filename_prefix="MagicAnimate/magicanimate", format="auto", codec="auto")


def magicanimate_basic() -> Graph:
    g = Graph("magicanimate_basic", "MagicAnimate: animate a reference photo with a DensePose video.")
    ckpt = g.add("CheckpointLoaderSimple", title="SD1.5 checkpoint (text encoder)",
                 ckpt_name=SD15_CHECKPOINT)
    image = g.add("LoadImage", title="Reference image", image=DEMO_IMAGE)
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
    image = g.add("VAEDecode", title="Reference image (VAE Decode)", samples=sampled["LATENT"], vae=ckpt["VAE"])
    _animate(g, image["IMAGE"], ckpt)
    return g


def multi_reference() -> Graph:
    g = Graph("multi_reference",
              "MagicAnimate with two reference photos of the same person (e.g. front and back), joined by Batch "
              "Images; chain more Batch Images for up to four.")
    ckpt = g.add("CheckpointLoaderSimple", title="SD1.5 checkpoint (text encoder)", ckpt_name=SD15_CHECKPOINT)
    front = g.add("LoadImage", title="Reference photo 1 (e.g. front)", image=DEMO_IMAGE)
    other = g.add("LoadImage", title="Reference photo 2 (e.g. back or side; replace the stand-in)", image=DEMO_IMAGE)
    photos = g.add("ImageBatch", title="Reference photos (1 to 4)", image1=front["IMAGE"], image2=other["IMAGE"])
    _animate(g, photos["IMAGE"], ckpt)
    return g


def pose_align() -> Graph:
    g = Graph("pose_align",
              "MagicAnimate with Pose Align: the driving DensePose video is scaled and shifted so that the body "
              "matches the DensePose of the reference photo (height and centre), one transform for the whole video.")
    ckpt = g.add("CheckpointLoaderSimple", title="SD1.5 checkpoint (text encoder)", ckpt_name=SD15_CHECKPOINT)
    image = g.add("LoadImage", title="Reference image", image=ALIGN_IMAGE)
    reference_pose = g.add("LoadImage", title="DensePose of the reference image", image=ALIGN_REFERENCE_POSE)
    _animate(g, image["IMAGE"], ckpt, reference_pose=reference_pose["IMAGE"])
    return g


GRAPHS = {"magicanimate_basic": magicanimate_basic, "txt2img_then_animate": txt2img_then_animate,
          "multi_reference": multi_reference, "pose_align": pose_align}

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
    """Column of each node: longest path from a source; settings-only sources sit just before their first consumer."""
    depth: dict[int, int] = {}
    for node in g.nodes:  # ids are in topological order (inputs must exist when a node is added)
        parents = [v.node for v in node.values.values() if isinstance(v, Out)]
        depth[node.id] = 1 + max((depth[p] for p in parents), default=-1)
    consumers: dict[int, list[int]] = {n.id: [] for n in g.nodes}
    for target, _name, src in g.edges():
        consumers[src.node].append(target.id)
    for node in g.nodes:
        is_source = not any(isinstance(v, Out) for v in node.values.values())
        if is_source and node.class_type not in LEFT_COLUMN and consumers[node.id]:
            depth[node.id] = min(depth[c] for c in consumers[node.id]) - 1
    return depth


def _size(spec: NodeSpec) -> list[int]:
    if spec.size:
        return list(spec.size)
    sockets = sum(1 for i in spec.inputs if not i.widget)
    return [spec.width, 46 + 22 * max(sockets, len(spec.outputs)) + 26 * len(spec.widgets)]


def _layout(g: Graph) -> dict[int, list[int]]:
    depth = _depths(g)
    columns: dict[int, list[Node]] = {}
    for node in g.nodes:
        columns.setdefault(depth[node.id], []).append(node)
    pos: dict[int, list[int]] = {}
    x = 0
    for col in sorted(columns):
        y = 0
        for node in columns[col]:
            pos[node.id] = [x, y]
            y += _size(node.spec)[1] + 60
        x += max(_size(n.spec)[0] for n in columns[col]) + 80
    return pos


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
        properties = ({"cnr_id": PACK_REGISTRY_ID} if spec.pack else {"cnr_id": "comfy-core", "ver": CORE_VERSION})
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
        "extra": {"ds": {"scale": 0.55, "offset": [60, 60]}, "info": {"description": g.description}},
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


# ------------------------------------------------------------------------------------------------------------------


def dumps(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def rendered(directory: Path = WORKFLOWS_DIR) -> dict[Path, str]:
    """Every output file and the text it should have."""
    files = {}
    for name, build in GRAPHS.items():
        g = build()
        files[directory / f"{name}.api.json"] = dumps(to_api(g))
        files[directory / f"{name}.json"] = dumps(to_ui(g))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1), write nothing")
    parser.add_argument("--out", type=Path, default=WORKFLOWS_DIR, help="output directory (default: workflows/)")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered(args.out).items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    verb = "stale" if args.check else "written"
    for path in stale:
        print(f"{verb}: {path}")
    if not stale:
        print("all workflow files up to date")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
