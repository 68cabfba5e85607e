"""``models/magicanimate/`` registered with ComfyUI's folder_paths (so extra_model_paths.yaml entries work too)."""

from __future__ import annotations

import os

import folder_paths

FOLDER = "magicanimate"
CHECKPOINT_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                "diffusion_pytorch_model.bin")


def register() -> None:
    """Add ``models/magicanimate`` to the known model folders, keeping paths added by extra_model_paths.yaml."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    paths, _ = folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))
    if default not in paths:
        paths = [default] + list(paths)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(CHECKPOINT_EXTENSIONS))


def roots() -> list[str]:
    register()
    return [p for p in folder_paths.get_folder_paths(FOLDER) if os.path.isdir(p)]


def _model_dirs(root: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        if "config.json" in filenames and any(w in filenames for w in WEIGHT_FILES):
            found.append(os.path.relpath(dirpath, root))
    return found


def diffusers_folders(kind: str) -> list[str]:
    """Folders under models/magicanimate holding config.json + weights; ``kind`` names first (e.g. appearance)."""
    names = sorted({d for r in roots() for d in _model_dirs(r)})
    return sorted(names, key=lambda n: (kind not in n.lower(), n))


def temporal_files() -> list[str]:
    """Checkpoint files under models/magicanimate that are not inside a diffusers folder."""
    out = set()
    for root in roots():
        skip = {os.path.join(root, d) for d in _model_dirs(root)}
        for dirpath, _dirs, filenames in os.walk(root, followlinks=True):
            if dirpath in skip:
                continue
            for fn in filenames:
                if fn.lower().endswith(CHECKPOINT_EXTENSIONS):
                    out.add(os.path.relpath(os.path.join(dirpath, fn), root))
    return sorted(out, key=lambda n: ("temporal" not in n.lower(), n))


def resolve(name: str) -> str:
    """Absolute path of a listed file or folder; a clear error if it is gone."""
    for root in roots():
        path = os.path.join(root, name)
        if os.path.exists(path):
            return path
    from ..magicanimate.errors import MagicAnimateError

    raise MagicAnimateError(f"'{name}' was not found under any models/magicanimate folder "
                            f"({', '.join(roots()) or folder_paths.models_dir + '/magicanimate'}); "
                            "put the MagicAnimate files there and refresh.")
