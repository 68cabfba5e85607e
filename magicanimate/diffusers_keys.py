"""SD1.5 diffusers UNets and ControlNets, read without ComfyUI: their folder, their shape check and their key names.

The ComfyUI side (config conversion, key mapping to ``UNetModel``, building the networks) is
``comfy_adapter.loaders``; what it needs to know about the diffusers layout itself is here. Every failure is a
:class:`CheckpointError` naming the file and what was expected.
"""

from __future__ import annotations

import json
import os

import torch

from .errors import CheckpointError
from .model_layout import CONFIG_FILE, DIFFUSERS_WEIGHT_FILES

__all__ = ["read_diffusers_folder", "sd15_shape_config", "controlnet_key_map", "is_unused_tail"]


def read_diffusers_folder(folder: str, hint: str) -> tuple[str, dict]:
    """(weights file, parsed config.json) of a diffusers folder, or of the folder holding a given weights file."""
    if os.path.isfile(folder):
        weights, folder = folder, os.path.dirname(folder)
    else:
        if not os.path.isdir(folder):
            raise CheckpointError(f"model folder not found: {folder}. Put {hint}.")
        weights = ""
        for cand in DIFFUSERS_WEIGHT_FILES:
            if os.path.isfile(os.path.join(folder, cand)):
                weights = os.path.join(folder, cand)
                break
        if not weights:
            raise CheckpointError(f"{folder} has no {DIFFUSERS_WEIGHT_FILES[0]} (or .bin). Expected {hint}.")
    cfg_path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(cfg_path):
        raise CheckpointError(f"{folder} has no {CONFIG_FILE}. Expected {hint}.")
    try:
        with open(cfg_path, encoding="utf-8") as fh:
            config = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({exc}). Expected {hint}.") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{cfg_path} does not hold a JSON object. Expected {hint}.")
    return weights, config


def sd15_shape_config(sd: dict[str, torch.Tensor], name: str, hint: str) -> dict:
    """The LDM-style UNet config of an SD1.5-shaped diffusers UNet/ControlNet state dict, read from tensor shapes.

    Raises :class:`CheckpointError` naming ``name`` when the tensors are not SD1.5-shaped (SDXL, SD2, a LoRA, ...).
    """
    def need(key: str) -> torch.Tensor:
        if key not in sd:
            raise CheckpointError(f"{name} is not an SD1.5-type diffusers UNet: key '{key}' is missing. "
                                  f"Expected {hint}.")
        return sd[key]

    conv_in = need("conv_in.weight")
    if conv_in.ndim != 4 or conv_in.shape[1] != 4:
        raise CheckpointError(f"{name}: conv_in takes {conv_in.shape[1] if conv_in.ndim == 4 else '?'} channels, "
                              f"expected 4 (an SD1.5 latent). Expected {hint}.")
    if "add_embedding.linear_1.weight" in sd or "class_embedding.linear_1.weight" in sd:
        raise CheckpointError(f"{name} is an SDXL-type UNet (it has add_embedding); MagicAnimate needs SD1.5. "
                              f"Expected {hint}.")
    mc = int(conv_in.shape[0])
    mult = []
    for i in range(4):
        w = need(f"down_blocks.{i}.resnets.0.conv2.weight")
        mult.append(int(w.shape[0]) // mc)
    if mult != [1, 2, 4, 4] or "down_blocks.4.resnets.0.conv1.weight" in sd:
        raise CheckpointError(f"{name}: block widths are {mc} x {mult}, not SD1.5's 1:2:4:4 layout. Expected {hint}.")
    proj_in = need("down_blocks.0.attentions.0.proj_in.weight")
    if proj_in.ndim != 4:
        raise CheckpointError(f"{name} uses linear transformer projections (SD2-style); MagicAnimate needs SD1.5. "
                              f"Expected {hint}.")
    ctx = int(need("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight").shape[1])
    if "down_blocks.0.attentions.0.transformer_blocks.1.attn1.to_q.weight" in sd:
        raise CheckpointError(f"{name} has more than one transformer per block (SDXL-style). Expected {hint}.")
    return {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
            "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": mc,
            "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": mult,
            "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": ctx, "num_heads": 8,
            "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
            "use_temporal_attention": False, "use_temporal_resblock": False}


def controlnet_key_map(sd: dict[str, torch.Tensor]) -> dict[str, str]:
    """Diffusers -> ComfyUI ``cldm.ControlNet`` names of the keys a UNet lacks (zero convs, hint embedding)."""
    extra = {"controlnet_mid_block.weight": "middle_block_out.0.weight",
             "controlnet_mid_block.bias": "middle_block_out.0.bias"}
    i = 0
    while f"controlnet_down_blocks.{i}.weight" in sd:
        for s in (".weight", ".bias"):
            extra[f"controlnet_down_blocks.{i}{s}"] = f"zero_convs.{i}.0{s}"
        i += 1
    hint_layers = ["controlnet_cond_embedding.conv_in"]
    j = 0
    while f"controlnet_cond_embedding.blocks.{j}.weight" in sd:
        hint_layers.append(f"controlnet_cond_embedding.blocks.{j}")
        j += 1
    hint_layers.append("controlnet_cond_embedding.conv_out")
    for n, layer in enumerate(hint_layers):
        for s in (".weight", ".bias"):
            extra[layer + s] = f"input_hint_block.{n * 2}{s}"
    return extra


def is_unused_tail(comfy_key: str) -> bool:
    """True for ComfyUI keys after the appearance encoder's last captured norm1 (output block 11's attention tail and
    the output head): the released file lacks them, and the encoder never runs them."""
    if comfy_key.startswith("out."):
        return True
    tail = "output_blocks.11.1."
    if comfy_key.startswith(tail + "proj_out."):
        return True
    block = tail + "transformer_blocks.0."
    if comfy_key.startswith(block) and not comfy_key.startswith(block + "norm1."):
        return True
    return False
