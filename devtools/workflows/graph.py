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
    SD15_TEXT_ENCODER,
    SD15_TEXT_ENCODER_TYPE,
    SD_VAE,
    TEMPORAL_CHECKPOINT,
    NodeSpec,
    Out,
)
from .notes import GROUPS, note_text

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
    group: str = ""  # the key of its group (:data:`.notes.GROUPS`)

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


@dataclass
class Note:
    """A Markdown note of the UI format (:data:`.notes.NOTE_TYPE`; no node of the API format)."""

    title: str
    text: str
    at: tuple[int, int]
    size: tuple[int, int]
    group: str


class Graph:
    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = description
        self.nodes: list[Node] = []
        self.notes: list[Note] = []

    def add(self, class_type: str, title: str | None = None, at: tuple[int, int] | None = None,
            size: tuple[int, int] | None = None, *, group: str, **values: Any) -> Node:
        spec = NODE_SPECS[class_type]
        if group not in GROUPS:
            raise KeyError(f"{class_type}: unknown group {group!r} (groups: {list(GROUPS)})")
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
        node = Node(len(self.nodes) + 1, class_type, title, values, at, size, group)
        self.nodes.append(node)
        return node

    def note(self, text: str, at: tuple[int, int], size: tuple[int, int], group: str = "models",
             title: str = "Read me: model files") -> Note:
        note = Note(title, text, at, size, group)
        self.notes.append(note)
        return note

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


def _text_encoder(g: Graph, at: dict[str, tuple[int, int]]) -> Out:
    """SD1.5's text encoder alone (core Load CLIP): the CLIP the animation templates encode their empty prompts with."""
    return g.add("CLIPLoader", title="SD1.5 text encoder", at=at["clip"], group="models",
                 clip_name=SD15_TEXT_ENCODER, type=SD15_TEXT_ENCODER_TYPE, device="default")["CLIP"]


def _animate(g: Graph, reference: Out, clip: Out, at: dict[str, tuple[int, int]], pose_frames: Out | None = None,
             components: Node | None = None, audio: Out | None = None,
             prompt_size: tuple[int, int] | None = None, streaming: bool = False) -> None:
    """The MagicAnimate part shared by the graphs: reference IMAGE + DensePose frames -> saved mp4.

    ``clip`` encodes the (empty) prompts. ``pose_frames``: DensePose frames made elsewhere in the graph, with
    ``components`` the GetVideoComponents whose fps the mp4 keeps; by default a LoadVideo of a DensePose video provides
    both. ``audio``: the sound the mp4 carries (none by default). ``at``: the position of each node (layout), by role:
    loader, vae, video and components (unless given), positive, negative, appearance, pose, segments, sample, decode,
    create, save. ``prompt_size``: the UI size of the two prompt nodes (default: the spec's). ``streaming``: the
    long-video path, flat in RAM: Pose Control reads Load Video's VIDEO a few frames at a time and MagicAnimate Save
    Video decodes the latents in chunks straight into the mp4 (roles video, save; no components, decode, create).
    """
    ma = g.add("MagicAnimateLoader", at=at["loader"], group="models", temporal_checkpoint=TEMPORAL_CHECKPOINT,
               appearance_encoder=APPEARANCE_ENCODER, densepose_controlnet=DENSEPOSE_CONTROLNET, weight_dtype="auto")
    vae = g.add("VAELoader", at=at["vae"], group="models", vae_name=SD_VAE)
    video = None
    if streaming or components is None:
        video = g.add("LoadVideo", title="DensePose video", at=at["video"], group="inputs", file=DEMO_VIDEO)
    if streaming:
        pose_frames = video["VIDEO"]
    elif components is None:
        components = g.add("GetVideoComponents", at=at["components"], group="inputs", video=video["VIDEO"])
    positive = g.add("CLIPTextEncode", title="Positive prompt (keep empty)", at=at["positive"],
                     size=prompt_size, group="animate", text="", clip=clip)
    negative = g.add("CLIPTextEncode", title="Negative prompt (keep empty)", at=at["negative"],
                     size=prompt_size, group="animate", text="", clip=clip)
    appearance = g.add("MagicAnimateAppearanceEncode", at=at["appearance"], group="animate",
                       appearance_encoder=ma["appearance_encoder"], vae=vae["VAE"], image=reference, fit="stretch",
                       width=512, height=512)
    pose = g.add("MagicAnimatePoseControl", at=at["pose"], group="animate", control_net=ma["CONTROL_NET"],
                 pose_frames=pose_frames if pose_frames is not None else components["images"],
                 strength=1.0, start_percent=0.0, end_percent=1.0, fit="stretch")
    segments = g.add("MagicAnimateSegmentFuse", at=at["segments"], group="animate", length=16, overlap=4,
                     closed_loop=True, fuse="average")
    latent = g.add("MagicAnimateTemporalSample", at=at["sample"], group="animate", model=ma["MODEL"],
                   appearance=appearance["appearance"], pose=pose["pose"], positive=positive["CONDITIONING"],
                   negative=negative["CONDITIONING"], seed=1, steps=25, cfg=7.5, sampler_name="reference_ddim",
                   scheduler="normal", denoise=1.0, noise_mode="tiled", segments=segments["segments"])
    if streaming:
        g.add("MagicAnimateSaveVideo", at=at["save"], group="save", samples=latent["LATENT"], vae=vae["VAE"],
              fps=25.0, filename_prefix="MagicAnimate/magicanimate", chunk_frames=16, video=video["VIDEO"])
        return
    frames = g.add("VAEDecode", at=at["decode"], group="animate", samples=latent["LATENT"], vae=vae["VAE"])
    media = {"audio": audio} if audio is not None else {}
    clip_video = g.add("CreateVideo", at=at["create"], group="save", images=frames["IMAGE"], fps=components["fps"],
                       **media)
    g.add("SaveVideo", at=at["save"], group="save", video=clip_video["VIDEO"],
          filename_prefix="MagicAnimate/magicanimate", format="auto", codec="auto")


def _note(g: Graph, at: dict[str, tuple[int, int]], size: tuple[int, int] | None = None, **kinds: bool) -> None:
    g.note(note_text(**kinds), at=at["note"], size=size or NOTE_SIZE)


def _one_photo(name: str, description: str, streaming: bool = False) -> Graph:
    """One reference photo (Load Image) animated with a DensePose video: the basic and the long-video templates."""
    g = Graph(name, description)
    at = LAYOUTS[g.name]
    _note(g, at)
    clip = _text_encoder(g, at)
    image = g.add("LoadImage", title="Reference image", at=at["image"], group="inputs", image=DEMO_IMAGE)
    _animate(g, image["IMAGE"], clip, at, streaming=streaming)
    return g


def magicanimate_basic() -> Graph:
    return _one_photo("magicanimate_basic", "MagicAnimate: animate a reference photo with a DensePose video.")


def txt2img_then_animate() -> Graph:
    g = Graph("txt2img_then_animate",
              "SD1.5 text-to-image makes the reference photo, MagicAnimate animates it with a DensePose video.")
    at = LAYOUTS[g.name]
    _note(g, at, size=TXT2IMG_NOTE_SIZE, with_checkpoint=True)
    ckpt = g.add("CheckpointLoaderSimple", title="Load Checkpoint (SD1.5)", at=at["ckpt"], group="models",
                 ckpt_name=SD15_CHECKPOINT)
    prompt = g.add("CLIPTextEncode", title="Reference image prompt", at=at["prompt"], size=(280, 90), group="inputs",
                   text="a portrait photo of a woman, full body, plain background", clip=ckpt["CLIP"])
    negative = g.add("CLIPTextEncode", title="Reference negative prompt", at=at["negative_prompt"],
                     size=(280, 90), group="inputs", text="blurry, low quality, deformed, cropped, watermark, text",
                     clip=ckpt["CLIP"])
    empty = g.add("EmptyLatentImage", at=at["empty"], group="inputs", width=512, height=512, batch_size=1)
    sampled = g.add("KSampler", at=at["ksampler"], group="inputs", model=ckpt["MODEL"], seed=1, steps=25, cfg=7.0,
                    sampler_name="euler", scheduler="normal", positive=prompt["CONDITIONING"],
                    negative=negative["CONDITIONING"], latent_image=empty["LATENT"], denoise=1.0)
    image = g.add("VAEDecode", title="Reference image", at=at["reference"], group="inputs",
                  samples=sampled["LATENT"], vae=ckpt["VAE"])
    _animate(g, image["IMAGE"], ckpt["CLIP"], at, prompt_size=(320, 100))
    return g


def magicanimate_long_video() -> Graph:
    return _one_photo("magicanimate_long_video",
                      "MagicAnimate for long videos: Pose Control reads the DensePose video a few frames at a time "
                      "and MagicAnimate Save Video decodes the result in chunks straight into the mp4, so RAM does not "
                      "grow with the video's length; the frames equal the basic template's.", streaming=True)


def magicanimate_from_video() -> Graph:
    g = Graph("magicanimate_from_video",
              "MagicAnimate from an ordinary video: the DensePose Estimator of comfyui_controlnet_aux (viridis colour "
              "map, as MagicAnimate was trained) turns the video into DensePose frames, then the reference photo is "
              "animated with them; the saved video keeps the source video's sound. Needs the comfyui_controlnet_aux "
              "node pack.")
    at = LAYOUTS[g.name]
    _note(g, at, densepose_pack=True)
    clip = _text_encoder(g, at)
    image = g.add("LoadImage", title="Reference image", at=at["image"], group="inputs", image=DEMO_IMAGE)
    video = g.add("LoadVideo", title="Ordinary video (a person moving)", at=at["video"], group="inputs",
                  file=FROM_VIDEO_INPUT)
    frames = g.add("GetVideoComponents", title="Video frames", at=at["components"], size=(160, 110), group="inputs",
                   video=video["VIDEO"])
    densepose = g.add("DensePosePreprocessor", title="DensePose Estimator (comfyui_controlnet_aux)",
                      at=at["densepose"], group="inputs", image=frames["images"],
                      model="densepose_r50_fpn_dl.torchscript", cmap="Viridis (MagicAnimate)", resolution=512)
    _animate(g, image["IMAGE"], clip, at, pose_frames=densepose["IMAGE"], components=frames, audio=frames["audio"])
    return g


def multi_reference() -> Graph:
    g = Graph("multi_reference",
              "MagicAnimate with two reference photos of the same person (e.g. front and back), joined by Batch "
              "Images; chain more Batch Images for up to four.")
    at = LAYOUTS[g.name]
    _note(g, at)
    clip = _text_encoder(g, at)
    front = g.add("LoadImage", title="Reference photo 1 (front)", at=at["front"], group="inputs", image=DEMO_IMAGE)
    other = g.add("LoadImage", title="Reference photo 2 (back or side)", at=at["other"], group="inputs",
                  image=DEMO_IMAGE)
    photos = g.add("ImageBatch", title="Reference photos (1 to 4)", at=at["photos"], group="inputs",
                   image1=front["IMAGE"], image2=other["IMAGE"])
    _animate(g, photos["IMAGE"], clip, at)
    return g


def pose_align() -> Graph:
    g = Graph("pose_align",
              "MagicAnimate with Pose Align: the driving DensePose video is scaled and shifted so that the body "
              "matches the DensePose of the reference photo (height and centre), one transform for the whole video.")
    at = LAYOUTS[g.name]
    _note(g, at)
    clip = _text_encoder(g, at)
    image = g.add("LoadImage", title="Reference image", at=at["image"], group="inputs", image=ALIGN_IMAGE)
    reference_pose = g.add("LoadImage", title="DensePose of the reference image", at=at["reference_pose"],
                           group="inputs", image=ALIGN_REFERENCE_POSE)
    video = g.add("LoadVideo", title="DensePose video", at=at["video"], group="inputs", file=DEMO_VIDEO)
    components = g.add("GetVideoComponents", at=at["components"], group="inputs", video=video["VIDEO"])
    aligned = g.add("MagicAnimatePoseAlign", at=at["aligned"], group="inputs", pose_frames=components["images"],
                    reference_pose=reference_pose["IMAGE"], mode="first-frame")
    _animate(g, image["IMAGE"], clip, at, pose_frames=aligned["pose_frames"], components=components)
    return g


#: UI size of the Markdown note (the frontend's minimum for it is 400x200).
NOTE_SIZE = (440, 440)
#: txt2img_then_animate's note: shorter, to leave the models column room for the checkpoint (about 20 lines of text).
TXT2IMG_NOTE_SIZE = (440, 400)

#: Layouts: the ``pos`` of every node of each graph, by role (the graph's own nodes and :func:`_animate`'s). Loaders
#: and file inputs on the left, the nodes that feed Temporal Sample in the column before it, the outputs stepping down
#: to Save Video on the right; long links run through the free rows between nodes (rules: :mod:`.layout`).
LAYOUTS: dict[str, dict[str, tuple[int, int]]] = {
    "magicanimate_basic": {
        "video": (-100, 50), "components": (340, -60), "image": (340, 100), "note": (-200, 680), "vae": (400, 580),
        "loader": (340, 750), "clip": (360, 1060), "appearance": (1000, 80), "pose": (960, 280),
        "positive": (880, 610), "negative": (900, 830), "segments": (900, 1020), "sample": (1380, 740),
        "decode": (1560, 340), "create": (1800, -50), "save": (1800, 620),
    },
    # txt2img_then_animate: the models column holds the note on top, then Load VAE, Load MagicAnimate and the
    # checkpoint, whose outputs run right in that order of height: the VAE and MagicAnimate links below the DensePose
    # video, the checkpoint's CLIP straight to the animation prompts (the positive one above, its link rising), and
    # the checkpoint's MODEL and VAE down into the text-to-image chain under that line (prompts, KSampler, Reference
    # image just above the line). In the animate group the MagicAnimate MODEL reaches Temporal Sample between the two
    # prompts and the VAE reaches VAE Decode between Pose Control and Appearance Encode.
    "txt2img_then_animate": {
        "note": (0, 0), "vae": (140, 450), "loader": (60, 560), "ckpt": (140, 790), "video": (500, 0),
        "components": (840, 0), "prompt": (500, 910), "negative_prompt": (500, 1050), "empty": (520, 1190),
        "ksampler": (860, 870), "reference": (1100, 740), "pose": (1350, 100), "appearance": (1350, 390),
        "positive": (1350, 590), "negative": (1350, 810), "segments": (1350, 960), "decode": (1820, 250),
        "sample": (1720, 720), "create": (2100, 0), "save": (2100, 620),
    },
    # magicanimate_long_video: the models group on top (Load VAE lowest), the inputs below it; the animate column
    # leaves a free row between the prompts and Pose Control, through which Load VAE's and the DensePose video's
    # links run to MagicAnimate Save Video (mid right), under Temporal Sample (top right, its MODEL link along the top).
    "magicanimate_long_video": {
        "note": (-200, 30), "loader": (340, 30), "clip": (360, 260), "vae": (400, 416), "video": (-100, 606),
        "image": (340, 700), "positive": (900, 90), "negative": (900, 240), "pose": (920, 634),
        "appearance": (900, 834), "segments": (920, 1034), "sample": (1400, 30), "save": (1760, 471),
    },
    "magicanimate_from_video": {
        "video": (0, -130), "image": (320, 20), "components": (420, -160), "densepose": (700, 90), "note": (60, 550),
        "vae": (600, 480), "loader": (600, 670), "clip": (620, 950), "appearance": (1480, 0), "pose": (1360, 200),
        "positive": (1160, 720), "negative": (1160, 960), "segments": (1240, 510), "sample": (1600, 660),
        "decode": (1740, 320), "create": (2020, -170), "save": (2020, 530),
    },
    "multi_reference": {
        "video": (-470, 50), "components": (-130, -60), "front": (-130, 140), "other": (220, 200),
        "photos": (570, 140), "note": (-470, 660), "vae": (0, 660), "loader": (440, 730), "clip": (520, 960),
        "pose": (900, 60), "appearance": (900, 260), "positive": (880, 800), "negative": (880, 950),
        "segments": (960, 1100), "sample": (1280, 730), "decode": (1390, 360), "create": (1630, -50),
        "save": (1630, 620),
    },
    "pose_align": {
        "video": (-180, 160), "components": (160, 130), "reference_pose": (140, 400), "image": (480, 420),
        "aligned": (490, 280), "note": (-180, 900), "vae": (460, 880), "loader": (380, 990), "clip": (480, 1220),
        "appearance": (880, 260), "pose": (880, 490), "positive": (880, 700), "negative": (880, 1045),
        "segments": (960, 1195), "sample": (1300, 990), "decode": (1620, 860), "create": (1860, 140),
        "save": (1860, 750),
    },
}


#: name -> builder of every shipped workflow (each becomes a template and an API file).
GRAPHS = {"magicanimate_basic": magicanimate_basic, "magicanimate_long_video": magicanimate_long_video,
          "txt2img_then_animate": txt2img_then_animate,
          "magicanimate_from_video": magicanimate_from_video, "multi_reference": multi_reference,
          "pose_align": pose_align}
