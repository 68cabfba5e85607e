"""Reading MagicAnimate model files safely and sorting their keys (reference spec section 3).

Files are read with safetensors or ``torch.load(weights_only=True)``; a pickle that would need to run code is refused.
Nothing here writes to a model file. Every failure is a :class:`CheckpointError` naming the file and the fix.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
from dataclasses import dataclass, field

import torch

from .errors import CheckpointError
from .motion_module import motion_module_keys

__all__ = ["read_state_dict", "unwrap_state_dict", "strip_prefixes", "TemporalCheckpoint", "parse_temporal_checkpoint",
           "MOTION_KEY_MARKER", "TEMPORAL_HINT", "foreign_kind"]

MOTION_KEY_MARKER = ".motion_modules."
TEMPORAL_HINT = ("MagicAnimate's temporal_attention.ckpt (from the MagicAnimate release, folder "
                 "MagicAnimate/temporal_attention/) goes in ComfyUI/models/magicanimate/")
_PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def _tensor_dict(obj: object, path: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a state dict (found {type(obj).__name__}); expected a mapping of "
                              "parameter names to tensors.")
    out = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not out:
        raise CheckpointError(f"{path} holds no tensors; it is not a model checkpoint.")
    return out


def unwrap_state_dict(obj: object, path: str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded checkpoint, unwrapping ``{"state_dict": ...}`` or ``{"module": ...}``."""
    if isinstance(obj, dict):
        for key in ("state_dict", "module", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                return _tensor_dict(inner, path)
    return _tensor_dict(obj, path)


def _starts_like_pickle(path: str) -> bool:
    """True when the file starts like a torch zip archive or a pickle stream (parsed, never executed)."""
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(b"PK\x03\x04"):
        return True
    try:
        next(pickletools.genops(io.BytesIO(head)))
    except Exception:
        return False
    return True


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a ``.safetensors`` or pickled (``.ckpt/.pt/.pth/.bin``) checkpoint onto the CPU, without running code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"model file not found: {path}")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); the download probably failed. Download the file again.")
    if path.lower().endswith(".safetensors"):
        try:
            import safetensors.torch

            return dict(safetensors.torch.load_file(path, device="cpu"))
        except Exception as exc:  # safetensors raises its own error types for truncated/corrupt headers
            raise CheckpointError(f"{path} is not a readable .safetensors file ({exc}). It is probably truncated or "
                                  "corrupt; download it again.") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _starts_like_pickle(path):
            raise CheckpointError(f"{path} is not a PyTorch checkpoint (it does not start like one; a failed download "
                                  "often saves an HTML error page instead). Download it again.") from exc
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} contains Python objects other than tensors{what}, and loading them could run arbitrary code, so "
            "it was not loaded. Use the original file from the model's release or a .safetensors conversion.") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} could not be read as a PyTorch checkpoint ({exc}). It is probably truncated "
                              "or not a checkpoint; download it again.") from exc
    return unwrap_state_dict(obj, path)


def foreign_kind(sd: dict[str, torch.Tensor]) -> str | None:
    """What a state dict is when it is plainly another kind of model file (for messages), else None."""
    keys = list(sd)
    if any("lora" in k.lower() for k in keys):
        return "a LoRA"
    if any(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "conditioner."))
           for k in keys):
        return "a Stable Diffusion checkpoint in ComfyUI/LDM layout (load it with CheckpointLoaderSimple)"
    if any(k.startswith("add_embedding.") or ".transformer_blocks.9." in k for k in keys):
        return "an SDXL UNet"
    if any(MOTION_KEY_MARKER in k for k in keys):
        return "a temporal (motion-module) checkpoint"
    if any(k.startswith("controlnet_cond_embedding.") for k in keys):
        return "a ControlNet"
    return None


def strip_prefixes(sd: dict[str, torch.Tensor],
                   prefixes: tuple[str, ...] = ("module.", "unet.")) -> dict[str, torch.Tensor]:
    """Remove leading wrapper prefixes (``module.`` from DDP, ``unet.`` from pipeline saves) from every key."""
    out = {}
    for key, value in sd.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key = key[len(p):]
                    changed = True
        out[key] = value
    return out


@dataclass
class TemporalCheckpoint:
    """A parsed temporal checkpoint: the 560 motion-module tensors and, for the full file, the spatial UNet tensors."""

    motion: dict[str, torch.Tensor]
    spatial: dict[str, torch.Tensor]
    block_out_channels: tuple[int, ...]
    path: str = "<checkpoint>"
    notes: list[str] = field(default_factory=list)

    @property
    def has_spatial(self) -> bool:
        return bool(self.spatial)


def parse_temporal_checkpoint(sd: dict[str, torch.Tensor], path: str = "<checkpoint>") -> TemporalCheckpoint:
    """Check that ``sd`` is a MagicAnimate temporal checkpoint and split it into motion and spatial parts.

    Accepts the full 3D-UNet file (SD1.5 spatial keys + 560 motion keys, diffusers names) or a motion-module-only
    file, with ``module.``/``unet.`` prefixes. Refuses LoRAs, LDM-format checkpoints, SDXL UNets and files with
    missing or extra motion-module keys.
    """
    name = os.path.basename(path)
    sd = strip_prefixes(sd)
    keys = list(sd)
    if any("lora" in k.lower() for k in keys):
        raise CheckpointError(f"{name} looks like a LoRA (it has 'lora' keys), not a MagicAnimate temporal "
                              f"checkpoint. {TEMPORAL_HINT}.")
    if any(k.startswith(("model.diffusion_model.", "input_blocks.", "first_stage_model.")) for k in keys):
        raise CheckpointError(f"{name} is a Stable Diffusion checkpoint in ComfyUI/LDM layout, not a MagicAnimate "
                              f"temporal checkpoint. Load it with CheckpointLoaderSimple; {TEMPORAL_HINT}.")
    if "add_embedding.linear_1.weight" in sd or any(".transformer_blocks.9." in k for k in keys):
        raise CheckpointError(f"{name} is an SDXL UNet; MagicAnimate is built on SD1.5. {TEMPORAL_HINT}.")
    motion = {k: v for k, v in sd.items() if MOTION_KEY_MARKER in k}
    spatial = {k: v for k, v in sd.items() if MOTION_KEY_MARKER not in k}
    if not motion:
        raise CheckpointError(f"{name} has no motion-module keys (names containing '{MOTION_KEY_MARKER}'); "
                              f"{TEMPORAL_HINT}.")
    extra = sorted(k for k in motion if k not in set(motion_module_keys()))
    if extra:
        raise CheckpointError(
            f"{name} has {len(extra)} motion-module keys MagicAnimate does not use (e.g. {extra[0]}); it looks like a "
            f"different motion model (AnimateDiff v2/v3 add a mid-block module). {TEMPORAL_HINT}.")
    missing = [k for k in motion_module_keys() if k not in motion]
    if missing:
        raise CheckpointError(f"{name} lacks {len(missing)} of the 560 motion-module tensors (e.g. {missing[0]}); the "
                              "file is incomplete. Download it again.")
    widths = []
    for d in range(4):
        w = motion[f"down_blocks.{d}.motion_modules.0.temporal_transformer.norm.weight"]
        widths.append(int(w.shape[0]))
    for key, tensor in motion.items():
        if key.endswith("pos_encoder.pe") and (tensor.ndim != 3 or tensor.shape[1] != 24):
            raise CheckpointError(f"{name}: {key} has shape {tuple(tensor.shape)}, expected (1, 24, C); this is not "
                                  f"a MagicAnimate motion module. {TEMPORAL_HINT}.")
    if widths[0] * 2 != widths[1] or widths[1] * 2 != widths[2] or widths[2] != widths[3]:
        raise CheckpointError(f"{name}: motion-module widths {widths} do not follow SD1.5's 1:2:4:4 layout.")
    notes = []
    if spatial:
        if "conv_in.weight" not in spatial:
            raise CheckpointError(f"{name} has {len(spatial)} non-motion keys but no UNet 'conv_in.weight'; expected "
                                  "a full MagicAnimate denoiser or a motion-module-only file.")
        notes.append(f"{len(spatial)} spatial UNet tensors and {len(motion)} motion-module tensors")
    else:
        notes.append(f"motion modules only ({len(motion)} tensors); spatial weights come from the MODEL input")
    return TemporalCheckpoint(motion=motion, spatial=spatial, block_out_channels=tuple(widths), path=path, notes=notes)
