"""What the templates say about themselves: the Markdown note of each, the titled groups its nodes sit in, and the
``properties.models`` entries the frontend's missing-models dialog reads. Everything about a model file (name, folder,
size, download) comes from :mod:`magicanimate.model_layout`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from magicanimate import model_layout
from magicanimate.model_layout import ModelFile

#: The frontend's note node with Markdown text (UI format only: a virtual node, never sent to the server).
NOTE_TYPE = "MarkdownNote"
#: Where the pack lives, and the one command that fetches its model files (run there with ComfyUI's Python).
PACK_FOLDER = "ComfyUI/custom_nodes/ComfyUI-MagicAnimate"
GET_MODELS = "python -m scripts.get_models"
WITH_CHECKPOINT = "--with-checkpoint"
CONTROLNET_AUX_URL = "https://github.com/Fannovel16/comfyui_controlnet_aux"


@dataclass(frozen=True)
class GroupStyle:
    title: str
    color: str  # one of LiteGraph's group colours, as ComfyUI's own templates use them


#: Group key -> its title and colour; every node of a template sits in one of these (``Graph.add(group=...)``).
GROUPS: dict[str, GroupStyle] = {
    "models": GroupStyle("Models (see the note)", "#3f789e"),
    "inputs": GroupStyle("Inputs", "#8A8"),
    "animate": GroupStyle("Animate (MagicAnimate)", "#a1309b"),
    "save": GroupStyle("Save video", "#b06634"),
}


def frontend_downloadable(file: ModelFile) -> bool:
    """Whether the frontend's missing-models dialog can fetch ``file`` itself: one file (not a diffusers folder) with
    one Hugging Face download, a ``.safetensors`` name and url (the only ones the dialog accepts)."""
    return (not file.is_dir and len(file.downloads) == 1 and file.name.endswith(".safetensors")
            and file.urls[0].startswith(f"{model_layout.HF}/") and file.urls[0].endswith(".safetensors"))


#: File name -> model file of every file a loader widget may name that the frontend can download itself.
DOWNLOADABLE: dict[str, ModelFile] = {f.name: f for f in model_layout.FILES if frontend_downloadable(f)}


def model_entries(widget_values: list) -> list[dict]:
    """``properties.models`` of a loader node: ``{name, url, directory}`` for each downloadable file it names."""
    return [{"name": v, "url": DOWNLOADABLE[v].urls[0], "directory": DOWNLOADABLE[v].folder}
            for v in widget_values if isinstance(v, str) and v in DOWNLOADABLE]


def _gigabytes(files: tuple[ModelFile, ...]) -> float:
    """Total size of ``files`` in GB, from their ``size`` texts ("about 5.11 GB", "about 335 MB")."""
    total = 0.0
    for f in files:
        match = re.fullmatch(r"about ([\d.]+) (GB|MB)", f.size)
        if not match:
            raise ValueError(f"{f.name}: size {f.size!r} is not 'about N GB' or 'about N MB'")
        total += float(match.group(1)) / (1000 if match.group(2) == "MB" else 1)
    return total


def _file_line(f: ModelFile) -> str:
    return f"- `{f.destination}` ({f.what}, {f.size})"


def note_text(with_checkpoint: bool = False, densepose_pack: bool = False) -> str:
    """The Markdown of a template's note: its model files, where they go, the command that fetches them and their
    size; ``with_checkpoint``: the template also needs the SD1.5 checkpoint (text-to-image); ``densepose_pack``: its
    DensePose frames come from comfyui_controlnet_aux."""
    fetched = model_layout.FETCHED
    lines = [
        "## Model files",
        "",
        f"One command fetches them all (about {_gigabytes(fetched):.1f} GB on disk). Run it in the pack's folder, "
        f"`{PACK_FOLDER}`, with ComfyUI's Python:",
        "",
        f"    {GET_MODELS}" + (f" {WITH_CHECKPOINT}" if with_checkpoint else ""),
        "",
        *(_file_line(f) for f in fetched),
    ]
    if with_checkpoint:
        ckpt = model_layout.SD15_CHECKPOINT
        lines += [_file_line(ckpt), "",
                  f"The checkpoint makes the reference image; `{WITH_CHECKPOINT}` adds it to the download "
                  f"({_gigabytes(fetched + (ckpt,)):.1f} GB in all)."]
    lines += ["", "Restart ComfyUI (or press R in the editor) once they are in place."]
    if densepose_pack:
        lines += ["", "## DensePose frames",
                  "",
                  f"The DensePose Estimator node is from [comfyui_controlnet_aux]({CONTROLNET_AUX_URL}): install it "
                  "with ComfyUI Manager (\"ComfyUI's ControlNet Auxiliary Preprocessors\"); it downloads its "
                  "DensePose model on first use. Keep its colour map on *Viridis (MagicAnimate)*. Put your video of "
                  "a person in `ComfyUI/input/` and pick it in *Load Video*."]
    return "\n".join(lines)
