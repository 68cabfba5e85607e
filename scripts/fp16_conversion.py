"""fp16 safetensors copies of MagicAnimate's released files (``python -m scripts.get_models --convert``).

The release ships ``temporal_attention.ckpt`` as a 5 GB fp32 pickle and the two diffusers folders in fp32. Their
fp16 safetensors copies are half the disk, load memory-mapped and never need the pickle reader; the loader lists them
like the originals (by their contents, not their names) and, given the same weight dtype, builds the same networks.
Written tensor by tensor under a temporary name, renamed when complete; a folder's ``config.json`` comes last, so a
half-converted folder is never listed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from magicanimate import model_layout as layout

#: Original entry name in ``models/magicanimate`` -> the name of its fp16 safetensors copy.
CONVERTED = {
    layout.TEMPORAL.name: "temporal_attention.fp16.safetensors",
    layout.APPEARANCE.name: f"{layout.APPEARANCE.name}_fp16",
    layout.CONTROLNET.name: f"{layout.CONTROLNET.name}_fp16",
}
#: The weights file of a converted diffusers folder (one the loader reads: see ``DIFFUSERS_WEIGHT_FILES``).
FOLDER_WEIGHTS = "diffusion_pytorch_model.fp16.safetensors"
assert FOLDER_WEIGHTS in layout.DIFFUSERS_WEIGHT_FILES


def converted_path(folder: Path, model: layout.ModelFile) -> Path:
    return folder / CONVERTED[model.name]


def is_converted(path: Path, model: layout.ModelFile) -> bool:
    """Whether the fp16 copy of ``model`` at ``path`` is complete."""
    if model.is_dir:
        return (path / layout.CONFIG_FILE).is_file() and (path / FOLDER_WEIGHTS).is_file()
    return path.is_file()


def convert_weights(src: Path, dst: Path) -> None:
    """``src`` (safetensors or a pickle read with ``weights_only``) as an fp16 safetensors ``dst``; tensors that are
    not floating point keep their dtype."""
    import torch

    from devtools.random_weights.sd15_files import write_safetensors_streaming
    from magicanimate.checkpoints import read_state_dict

    sd = read_state_dict(src)  # memory-mapped: the source costs no RAM beyond the tensor being written
    dtypes = {k: torch.float16 if v.is_floating_point() else v.dtype for k, v in sd.items()}
    write_safetensors_streaming(dst, {k: tuple(v.shape) for k, v in sd.items()}, lambda name, shape: sd[name],
                                dtypes, {"format": "pt", "converted_from": src.name})


def convert(src: Path, dst: Path, model: layout.ModelFile) -> None:
    """Write the fp16 copy of ``model`` (a file, or a diffusers folder) found at ``src`` to ``dst``."""
    if not model.is_dir:
        convert_weights(src, dst)
        return
    weights = next((src / w for w in layout.DIFFUSERS_WEIGHT_FILES if (src / w).is_file()), None)
    if weights is None or not (src / layout.CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{src} has no {layout.CONFIG_FILE} or weights to convert")
    dst.mkdir(parents=True, exist_ok=True)
    convert_weights(weights, dst / FOLDER_WEIGHTS)
    partial = dst / (layout.CONFIG_FILE + ".partial")
    shutil.copyfile(src / layout.CONFIG_FILE, partial)
    partial.replace(dst / layout.CONFIG_FILE)
