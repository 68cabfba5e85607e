"""The graph description (:class:`Graph`) and the shipped graphs (:data:`GRAPHS`), each placed by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .nodes import (
    ALIGN_IMAGE,
    ALIGN_REFERENCE_POSE,
    APPEARANCE_ENCODER,
    DEMO_IMAGE,
    DEMO_VIDEO,
    DENSEPOSE_CONTROLNET,
    FROM_VIDEO_INPUT,
    NODE_SPECS,
    SD15_CHECKPOINT,
    SD_VAE,
    TEMPORAL_CHECKPOINT,
    NodeSpec,
    Out,
)

# ------------------------------------------------------------------------------------------------------------------
# Graph description


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
#: to Save Video on the right; long links run through the free rows between nodes (rules: :mod:`.layout`).
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
