"""Build ComfyUI models from MagicAnimate's diffusers-layout files (reference spec section 3).

One code path serves the real full-size files and the tiny test configs: the SD1.5-shaped UNet config is read from the
tensors' shapes, diffusers names are mapped to ComfyUI's with ``comfy.utils.unet_to_diffusers``, and ComfyUI's own
classes (``UNetModel`` via ``supported_models.SD15``, ``cldm.ControlNet``, ``comfy.ops``) are instantiated.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import comfy.cldm.cldm
import comfy.controlnet
import comfy.model_detection
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.supported_models
import comfy.utils
import torch

from ..checkpoints import foreign_kind, read_state_dict
from ..errors import CheckpointError
from ..motion_module import MotionModuleSet

log = logging.getLogger("MagicAnimate")

__all__ = ["sd15_unet_config", "diffusers_unet_to_comfy", "build_unet", "build_controlnet", "build_motion_modules",
           "load_appearance_encoder", "load_densepose_controlnet", "AppearanceEncoderModel", "pick_dtypes",
           "APPEARANCE_HINT", "CONTROLNET_HINT"]

APPEARANCE_HINT = ("the MagicAnimate appearance_encoder folder (config.json + diffusion_pytorch_model.safetensors) "
                   "goes "
                   "in ComfyUI/models/magicanimate/appearance_encoder/")
CONTROLNET_HINT = ("the MagicAnimate densepose_controlnet folder (config.json + diffusion_pytorch_model.safetensors) "
                   "goes in ComfyUI/models/magicanimate/densepose_controlnet/")


def sd15_unet_config(sd: dict[str, torch.Tensor], name: str, hint: str) -> dict:
    """ComfyUI ``UNetModel`` config for an SD1.5-shaped diffusers UNet/ControlNet state dict, from tensor shapes.

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
    cfg = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
           "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": mc,
           "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": mult,
           "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": ctx, "num_heads": 8,
           "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
           "use_temporal_attention": False, "use_temporal_resblock": False}
    return comfy.model_detection.convert_config(cfg)


def diffusers_unet_to_comfy(sd: dict[str, torch.Tensor], unet_config: dict,
                            extra_map: dict[str, str] | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename diffusers UNet keys to ComfyUI ``UNetModel`` keys; returns (renamed dict, unused diffusers keys)."""
    mapping = comfy.utils.unet_to_diffusers(unet_config)
    if extra_map:
        mapping.update(extra_map)
    out = {}
    for dk, ck in mapping.items():
        if dk in sd:
            out[ck] = sd[dk]
    used = {dk for dk in mapping if dk in sd}
    return out, sorted(k for k in sd if k not in used)


def pick_dtypes(weight_dtype: torch.dtype | None, param_count: int, stored_dtype: torch.dtype | None,
                load_device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
    """(storage dtype, manual-cast compute dtype) chosen by ComfyUI's rules, or forced by ``weight_dtype``."""
    supported = [torch.float16, torch.bfloat16, torch.float32]
    if weight_dtype is None:
        dtype = comfy.model_management.unet_dtype(model_params=param_count, supported_dtypes=supported,
                                                  weight_dtype=stored_dtype)
    else:
        dtype = weight_dtype
    return dtype, comfy.model_management.unet_manual_cast(dtype, load_device, supported)


def build_unet(sd_diffusers: dict[str, torch.Tensor], name: str, hint: str,
               weight_dtype: torch.dtype | None = None
               ) -> tuple[comfy.model_patcher.ModelPatcher, list[str], list[str]]:
    """A ComfyUI SD1.5 ``ModelPatcher`` from a diffusers UNet state dict.

    Returns (patcher, missing ComfyUI keys, unused file keys). Missing keys are left as constructed (zeros by
    ``disable_weight_init``... callers decide whether missing keys are acceptable).
    """
    unet_config = sd15_unet_config(sd_diffusers, name, hint)
    comfy_sd, unused = diffusers_unet_to_comfy(sd_diffusers, unet_config)
    load_device = comfy.model_management.get_torch_device()
    params = sum(t.numel() for t in comfy_sd.values())
    dtype, manual_cast = pick_dtypes(weight_dtype, params, comfy.utils.weight_dtype(comfy_sd), load_device)
    model_config = comfy.supported_models.SD15(unet_config)
    model_config.set_inference_dtype(dtype, manual_cast)
    model = model_config.get_model(comfy_sd, "")
    offload = comfy.model_management.unet_offload_device()
    model = model.to(offload)
    expected = set(model.diffusion_model.state_dict())
    missing = sorted(expected - set(comfy_sd))
    model.diffusion_model.load_state_dict(comfy_sd, strict=False)
    if missing:
        # Never leave uninitialised memory behind (integration finding B6): zero what the file lacks.
        params_by_name = dict(model.diffusion_model.named_parameters())
        with torch.no_grad():
            for key in missing:
                if key in params_by_name:
                    params_by_name[key].zero_()
    # Managed like core's own models: newer cores name theirs CoreModelPatcher (dynamic VRAM on NVIDIA cards).
    patcher_class = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    patcher = patcher_class(model, load_device=load_device, offload_device=offload)
    return patcher, missing, unused


def _controlnet_extra_map(sd: dict[str, torch.Tensor]) -> dict[str, str]:
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


def build_controlnet(sd_diffusers: dict[str, torch.Tensor], name: str,
                     weight_dtype: torch.dtype | None = None) -> comfy.controlnet.ControlNet:
    """A core ``comfy.controlnet.ControlNet`` (CONTROL_NET) from a diffusers SD1.5 ControlNet state dict."""
    kind = foreign_kind(sd_diffusers)
    if kind is not None and kind != "a ControlNet":
        raise CheckpointError(f"{name} is {kind}, not a diffusers ControlNet. Expected {CONTROLNET_HINT}.")
    if "controlnet_cond_embedding.conv_in.weight" not in sd_diffusers:
        raise CheckpointError(f"{name} is not a diffusers ControlNet (no controlnet_cond_embedding). "
                              f"Expected {CONTROLNET_HINT}.")
    unet_config = sd15_unet_config(sd_diffusers, name, CONTROLNET_HINT)
    comfy_sd, unused = diffusers_unet_to_comfy(sd_diffusers, unet_config, _controlnet_extra_map(sd_diffusers))
    load_device = comfy.model_management.get_torch_device()
    dtype, manual_cast = pick_dtypes(weight_dtype, -1, comfy.utils.weight_dtype(comfy_sd), load_device)
    cfg = dict(unet_config)
    cfg.pop("out_channels")
    cfg.update(operations=comfy.ops.pick_operations(dtype, manual_cast), dtype=dtype,
               device=comfy.model_management.unet_offload_device(),
               hint_channels=int(comfy_sd["input_hint_block.0.weight"].shape[1]))
    control_model = comfy.cldm.cldm.ControlNet(**cfg)
    missing, unexpected = control_model.load_state_dict(comfy_sd, strict=False)
    if missing:
        raise CheckpointError(f"{name} lacks {len(missing)} ControlNet tensors (e.g. {missing[0]}); the file is "
                              "incomplete. Download it again.")
    if unused:
        log.info("MagicAnimate: %d unused keys in %s", len(unused), name)
    return comfy.controlnet.ControlNet(control_model, load_device=load_device, manual_cast_dtype=manual_cast)


def build_motion_modules(motion_sd: dict[str, torch.Tensor], block_out_channels: tuple[int, ...], name: str,
                         weight_dtype: torch.dtype) -> MotionModuleSet:
    """The 20 motion modules on the offload device, with ComfyUI's ops (they become part of the UNet's tree)."""
    load_device = comfy.model_management.get_torch_device()
    manual_cast = comfy.model_management.unet_manual_cast(weight_dtype, load_device,
                                                          [torch.float16, torch.bfloat16, torch.float32])
    ops = comfy.ops.pick_operations(weight_dtype, manual_cast)
    offload = comfy.model_management.unet_offload_device()
    modules = MotionModuleSet(block_out_channels, ops=ops, dtype=weight_dtype, device=offload)
    expected = modules.state_dict()
    for key, tensor in motion_sd.items():
        if tuple(expected[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{name}: {key} has shape {tuple(tensor.shape)}, "
                                  f"expected {tuple(expected[key].shape)}.")
    modules.load_state_dict({k: v.to(weight_dtype) for k, v in motion_sd.items()}, strict=True)
    return modules.eval()


@dataclass
class AppearanceEncoderModel:
    """The reference UNet (a ComfyUI SD1.5 ``ModelPatcher``) and the keys its file lacked (never run)."""

    patcher: comfy.model_patcher.ModelPatcher
    missing_keys: list[str]
    path: str


def _diffusers_folder(folder: str, hint: str) -> tuple[str, dict]:
    if os.path.isfile(folder):
        weights, folder = folder, os.path.dirname(folder)
    else:
        if not os.path.isdir(folder):
            raise CheckpointError(f"model folder not found: {folder}. Put {hint}.")
        weights = ""
        for cand in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                     "diffusion_pytorch_model.bin"):
            if os.path.isfile(os.path.join(folder, cand)):
                weights = os.path.join(folder, cand)
                break
        if not weights:
            raise CheckpointError(f"{folder} has no diffusion_pytorch_model.safetensors (or .bin). Expected {hint}.")
    cfg_path = os.path.join(folder, "config.json")
    if not os.path.isfile(cfg_path):
        raise CheckpointError(f"{folder} has no config.json. Expected {hint}.")
    try:
        with open(cfg_path, encoding="utf-8") as fh:
            config = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({exc}). Expected {hint}.") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{cfg_path} does not hold a JSON object. Expected {hint}.")
    return weights, config


def load_appearance_encoder(folder: str, weight_dtype: torch.dtype | None = None) -> AppearanceEncoderModel:
    """Load MagicAnimate's appearance encoder folder as a ComfyUI SD1.5 UNet.

    The real file lacks the last transformer block's attention/FF weights and the output head (integration finding
    B6); those stay zero and are never run, because the encoder forward stops after its last captured ``norm1``.
    """
    weights, _config = _diffusers_folder(folder, APPEARANCE_HINT)
    sd = read_state_dict(weights)
    kind = foreign_kind(sd)
    if kind is not None:
        raise CheckpointError(f"{weights} is {kind}, not the appearance encoder. Expected {APPEARANCE_HINT}.")
    patcher, missing, unused = build_unet(sd, weights, APPEARANCE_HINT, weight_dtype)
    needed_missing = [k for k in missing if not _is_unused_tail(k)]
    if needed_missing:
        raise CheckpointError(f"{weights} lacks {len(needed_missing)} tensors the appearance encoder needs (e.g. "
                              f"{needed_missing[0]}); the file is incomplete. Download it again.")
    log.info("MagicAnimate: appearance encoder %s: %d tensors not in the file (unused tail), %d unused keys",
             weights, len(missing), len(unused))
    return AppearanceEncoderModel(patcher=patcher, missing_keys=missing, path=weights)


def _is_unused_tail(comfy_key: str) -> bool:
    """True for ComfyUI keys after the last captured norm1 (output block 11's attention tail and the output head)."""
    if comfy_key.startswith("out."):
        return True
    tail = "output_blocks.11.1."
    if comfy_key.startswith(tail + "proj_out."):
        return True
    block = tail + "transformer_blocks.0."
    if comfy_key.startswith(block) and not comfy_key.startswith(block + "norm1."):
        return True
    return False


def load_densepose_controlnet(folder: str, weight_dtype: torch.dtype | None = None) -> comfy.controlnet.ControlNet:
    """Load MagicAnimate's densepose_controlnet folder as a core CONTROL_NET."""
    weights, config = _diffusers_folder(folder, CONTROLNET_HINT)
    order = config.get("controlnet_conditioning_channel_order", "rgb")
    if order != "rgb":
        raise CheckpointError(f"{folder}/config.json asks for '{order}' conditioning; only 'rgb' is supported.")
    return build_controlnet(read_state_dict(weights), weights, weight_dtype)
