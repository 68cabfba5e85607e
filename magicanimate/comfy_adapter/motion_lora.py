"""Motion LoRAs (AnimateDiff's layout) on the MagicAnimate MODEL, loaded by ComfyUI's own LoRA code.

AnimateDiff motion LoRAs name each temporal-attention projection by its checkpoint path with diffusers' processor
spelling, e.g. ``down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor
.to_q_lora.up.weight`` (``to_out_lora`` for ``to_out.0``). Core ``comfy.sd.load_lora_for_models`` only knows the SD1.5
UNet's names, so :func:`motion_lora_key_map` maps these names (and the plain checkpoint paths) to the MODEL's keys
``diffusion_model.motion_modules.<checkpoint path>.weight``; ``comfy.lora.load_lora`` then reads every LoRA variant
it supports and the patches go on a clone with ``add_patches``, stacking with LoraLoaderModelOnly, hooks and merges.
"""

from __future__ import annotations

import re

import comfy.lora
import comfy.model_patcher
import torch

from ..errors import CheckpointError, MagicAnimateError
from .temporal import MOTION_PREFIX, motion_modules_of

__all__ = ["motion_lora_key_map", "apply_motion_lora", "lora_module_name"]

_PROJECTION = re.compile(r"(.*\.attention_blocks\.\d+)\.(to_q|to_k|to_v|to_out)(?:\.0)?")
#: Where a LoRA tensor name leaves its module name (``<module><sep>...``), for every form comfy.lora reads.
_SEPARATORS = ("_lora.", ".lora_", ".lora.", ".alpha", ".dora_scale", ".diff", ".w_norm", ".b_norm", ".hada_",
               ".lokr_", ".oft_", ".set_weight", ".reshape_weight")
#: LoRA tensors whose first dimension is the target's output width, and those whose second is its input width.
_UP_SUFFIXES = ("_lora.up.weight", ".lora_up.weight", ".lora.up.weight", ".lora_B.weight")
_DOWN_SUFFIXES = ("_lora.down.weight", ".lora_down.weight", ".lora.down.weight", ".lora_A.weight")


def motion_lora_key_map(model: comfy.model_patcher.ModelPatcher) -> dict[str, str]:
    """LoRA module name -> MODEL state-dict key for every motion-module weight.

    Names: the AnimateDiff processor form (``...attention_blocks.0.processor.to_q``), the checkpoint path
    (``down_blocks.0.motion_modules.0.temporal_transformer.proj_in``) and ComfyUI's generic form
    (``diffusion_model.motion_modules.down_blocks.0...``).
    """
    key_map = {}
    for key in model.model_state_dict(filter_prefix=MOTION_PREFIX):
        if not key.endswith(".weight"):
            continue
        module = key[:-len(".weight")]
        path = module[len(MOTION_PREFIX):]
        key_map[module] = key
        key_map[path] = key
        projection = _PROJECTION.fullmatch(path)
        if projection:
            key_map[f"{projection[1]}.processor.{projection[2]}"] = key
    return key_map


def lora_module_name(lora_key: str, key_map: dict[str, str]) -> str | None:
    """The ``key_map`` module a LoRA tensor name belongs to, or None."""
    for sep in _SEPARATORS:
        i = lora_key.find(sep)
        while i > 0:
            if lora_key[:i] in key_map:
                return lora_key[:i]
            i = lora_key.find(sep, i + 1)
    return None


def _check_shapes(lora: dict[str, torch.Tensor], key_map: dict[str, str], model_sd: dict[str, torch.Tensor],
                  name: str) -> None:
    for key, tensor in lora.items():
        dim = 0 if key.endswith(_UP_SUFFIXES) else 1 if key.endswith(_DOWN_SUFFIXES) else None
        module = lora_module_name(key, key_map) if dim is not None else None
        if module is None or tensor.ndim != 2:
            continue
        target = model_sd[key_map[module]]
        if target.ndim == 2 and tensor.shape[dim] != target.shape[dim]:
            raise CheckpointError(f"{name}: {key} has shape {tuple(tensor.shape)} but the motion module weight is "
                                  f"{tuple(target.shape)}; the LoRA was made for a motion model of another size "
                                  "(e.g. SDXL). Use an SD1.5 (AnimateDiff v1/v2) motion LoRA.")


def apply_motion_lora(model: comfy.model_patcher.ModelPatcher, lora: dict[str, torch.Tensor], strength: float,
                      name: str) -> tuple[comfy.model_patcher.ModelPatcher, int, list[str]]:
    """A clone of the MagicAnimate ``model`` with ``lora``'s motion-module patches at ``strength``.

    Returns (patched clone, number of weights patched, LoRA tensor names that match no motion module, e.g. the
    mid-block of an AnimateDiff v2 LoRA: MagicAnimate has no mid-block motion module). Raises
    :class:`CheckpointError` naming ``name`` when no tensor matches.
    """
    dm = getattr(getattr(model, "model", None), "diffusion_model", None)
    if dm is None or motion_modules_of(dm) is None:
        raise MagicAnimateError("Motion LoRA (MagicAnimate): the model input has no motion modules; connect the MODEL "
                                "output of Load MagicAnimate (or of a node after it).")
    key_map = motion_lora_key_map(model)
    unmatched = sorted(k for k in lora if lora_module_name(k, key_map) is None)
    if len(unmatched) == len(lora):
        raise CheckpointError(
            f"{name} holds no LoRA weights for MagicAnimate's motion modules (none of its {len(lora)} tensors is "
            f"named like 'down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0."
            f"processor.to_q_lora.up.weight', e.g. it has {unmatched[0]!r}). An SD1.5 image LoRA goes through "
            "LoraLoaderModelOnly; pick an AnimateDiff v1/v2 motion LoRA here.")
    _check_shapes(lora, key_map, model.model_state_dict(filter_prefix=MOTION_PREFIX), name)
    patches = comfy.lora.load_lora(lora, key_map, log_missing=False)
    if not patches:
        raise CheckpointError(f"{name}: its motion-module tensors are in no LoRA format ComfyUI reads (expected "
                              "'..._lora.up.weight' / '..._lora.down.weight' pairs).")
    patched = model.clone()
    if strength == 0:
        return patched, 0, unmatched
    added = patched.add_patches(patches, strength)
    return patched, len(added), unmatched
