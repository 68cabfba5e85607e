"""Every function that builds a ComfyUI model from a MagicAnimate file: the temporal MODEL, the appearance encoder
and the DensePose CONTROL_NET (what the Load MagicAnimate node does).

One code path serves the real full-size files and the tiny test configs: the SD1.5-shaped UNet config is read from the
tensors' shapes, diffusers names are mapped to ComfyUI's with ``comfy.utils.unet_to_diffusers``, and ComfyUI's own
classes (``UNetModel`` via ``supported_models.SD15``, ``cldm.ControlNet``, ``comfy.ops``) are instantiated. The file
names and hints come from ``magicanimate.model_layout``; the diffusers-side checks from ``magicanimate.diffusers_keys``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import comfy.cldm.cldm
import comfy.controlnet
import comfy.model_detection
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.supported_models
import comfy.utils
import torch

from ..checkpoints import foreign_kind, parse_temporal_checkpoint, read_state_dict
from ..diffusers_keys import controlnet_key_map, is_unused_tail, read_diffusers_folder, sd15_shape_config
from ..errors import CheckpointError
from ..model_layout import APPEARANCE, CONTROLNET, TEMPORAL
from ..motion_module import MotionModuleSet
from .temporal import MOTION_ATTR, apply_temporal

log = logging.getLogger("MagicAnimate")

__all__ = ["sd15_unet_config", "diffusers_unet_to_comfy", "pick_dtypes", "build_unet", "build_controlnet",
           "build_motion_modules", "TemporalLoad", "load_temporal_model", "AppearanceEncoderModel",
           "load_appearance_encoder", "load_densepose_controlnet"]


def sd15_unet_config(sd: dict[str, torch.Tensor], name: str, hint: str) -> dict:
    """ComfyUI ``UNetModel`` config for an SD1.5-shaped diffusers UNet/ControlNet state dict, from tensor shapes.

    Raises :class:`CheckpointError` naming ``name`` when the tensors are not SD1.5-shaped (SDXL, SD2, a LoRA, ...).
    """
    return comfy.model_detection.convert_config(sd15_shape_config(sd, name, hint))


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
        # Never leave uninitialised memory behind: zero what the file lacks.
        params_by_name = dict(model.diffusion_model.named_parameters())
        with torch.no_grad():
            for key in missing:
                if key in params_by_name:
                    params_by_name[key].zero_()
    # Managed like core's own models: newer cores name theirs CoreModelPatcher (dynamic VRAM on NVIDIA cards).
    patcher_class = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    patcher = patcher_class(model, load_device=load_device, offload_device=offload)
    return patcher, missing, unused


def build_controlnet(sd_diffusers: dict[str, torch.Tensor], name: str,
                     weight_dtype: torch.dtype | None = None) -> comfy.controlnet.ControlNet:
    """A core ``comfy.controlnet.ControlNet`` (CONTROL_NET) from a diffusers SD1.5 ControlNet state dict."""
    kind = foreign_kind(sd_diffusers)
    if kind is not None and kind != "a ControlNet":
        raise CheckpointError(f"{name} is {kind}, not a diffusers ControlNet. Expected {CONTROLNET.hint}.")
    if "controlnet_cond_embedding.conv_in.weight" not in sd_diffusers:
        raise CheckpointError(f"{name} is not a diffusers ControlNet (no controlnet_cond_embedding). "
                              f"Expected {CONTROLNET.hint}.")
    unet_config = sd15_unet_config(sd_diffusers, name, CONTROLNET.hint)
    comfy_sd, unused = diffusers_unet_to_comfy(sd_diffusers, unet_config, controlnet_key_map(sd_diffusers))
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
class TemporalLoad:
    """A temporal MODEL plus what loading it found (for logs and the node's report).

    ``motion`` is the MODEL's ``diffusion_model.motion_modules`` (its weights are in ``model.model_state_dict()``).
    """

    model: comfy.model_patcher.ModelPatcher
    motion: MotionModuleSet
    spatial_source: str
    notes: list[str] = field(default_factory=list)


def load_temporal_model(path: str, weight_dtype: torch.dtype | None = None,
                        base_model: comfy.model_patcher.ModelPatcher | None = None) -> TemporalLoad:
    """Load ``temporal_attention.ckpt`` (or a conversion) into a temporal ComfyUI MODEL.

    Spatial weights come from the checkpoint when it is the full 3D UNet (as in the reference), or from
    ``base_model`` when one is given (it then wins) or when the file holds only motion modules. ``base_model`` is
    left unchanged: the MODEL returned has a module tree of its own that shares its weight storage.
    """
    name = os.path.basename(path)
    ckpt = parse_temporal_checkpoint(read_state_dict(path), path)
    notes = list(ckpt.notes)
    if base_model is not None:
        dm = getattr(base_model.model, "diffusion_model", None)
        if dm is None or getattr(dm, "model_channels", None) != ckpt.block_out_channels[0] or getattr(
                dm, "context_dim", 768) is None:
            raise CheckpointError(f"the MODEL input is not an SD1.5 UNet matching {name} "
                                  f"({ckpt.block_out_channels[0]} base channels); connect an SD1.5 checkpoint.")
        if MOTION_ATTR in dm._modules:
            raise CheckpointError("the MODEL input is already a MagicAnimate MODEL (it has motion modules); connect "
                                  "a plain SD1.5 MODEL, e.g. from CheckpointLoaderSimple.")
        base, source = base_model, "MODEL input"
    elif ckpt.has_spatial:
        sd15_unet_config(ckpt.spatial, path, TEMPORAL.hint)  # validates the shapes before building anything
        base, missing, unused = build_unet(ckpt.spatial, path, TEMPORAL.hint, weight_dtype)
        if missing:
            raise CheckpointError(f"{name} lacks {len(missing)} spatial UNet tensors (e.g. {missing[0]}); the file "
                                  "is incomplete. Download it again, or connect an SD1.5 MODEL.")
        notes.append(f"missing keys: 0, unexpected keys: {len(unused)}")
        source = name
    else:
        raise CheckpointError(f"{name} holds only motion modules; connect an SD1.5 MODEL (e.g. from "
                              "CheckpointLoaderSimple) to the loader's optional model input for the spatial weights.")
    dtype = base.model.get_dtype()
    motion = build_motion_modules(ckpt.motion, ckpt.block_out_channels, path, dtype)
    log.info("MagicAnimate: loaded %s (%s); spatial weights from %s", name, "; ".join(notes), source)
    model = apply_temporal(base, motion, model_is_private=base_model is None)
    return TemporalLoad(model=model, motion=motion, spatial_source=source, notes=notes)


@dataclass
class AppearanceEncoderModel:
    """The reference UNet (a ComfyUI SD1.5 ``ModelPatcher``) and the keys its file lacked (never run)."""

    patcher: comfy.model_patcher.ModelPatcher
    missing_keys: list[str]
    path: str


def load_appearance_encoder(folder: str, weight_dtype: torch.dtype | None = None) -> AppearanceEncoderModel:
    """Load MagicAnimate's appearance encoder folder as a ComfyUI SD1.5 UNet.

    The released file lacks the last transformer block's attention/FF weights and the output head; those stay zero
    and are never run, because the encoder forward stops after its last captured ``norm1``.
    """
    weights, _config = read_diffusers_folder(folder, APPEARANCE.hint)
    sd = read_state_dict(weights)
    kind = foreign_kind(sd)
    if kind is not None:
        raise CheckpointError(f"{weights} is {kind}, not the appearance encoder. Expected {APPEARANCE.hint}.")
    patcher, missing, unused = build_unet(sd, weights, APPEARANCE.hint, weight_dtype)
    needed_missing = [k for k in missing if not is_unused_tail(k)]
    if needed_missing:
        raise CheckpointError(f"{weights} lacks {len(needed_missing)} tensors the appearance encoder needs (e.g. "
                              f"{needed_missing[0]}); the file is incomplete. Download it again.")
    log.info("MagicAnimate: appearance encoder %s: %d tensors not in the file (unused tail), %d unused keys",
             weights, len(missing), len(unused))
    return AppearanceEncoderModel(patcher=patcher, missing_keys=missing, path=weights)


def load_densepose_controlnet(folder: str, weight_dtype: torch.dtype | None = None) -> comfy.controlnet.ControlNet:
    """Load MagicAnimate's densepose_controlnet folder as a core CONTROL_NET."""
    weights, config = read_diffusers_folder(folder, CONTROLNET.hint)
    order = config.get("controlnet_conditioning_channel_order", "rgb")
    if order != "rgb":
        raise CheckpointError(f"{folder}/config.json asks for '{order}' conditioning; only 'rgb' is supported.")
    return build_controlnet(read_state_dict(weights), weights, weight_dtype)
