"""Loading the three MagicAnimate model files into ComfyUI objects (what the LoadMagicAnimate node does)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import comfy.model_patcher
import torch

from ..checkpoints import TEMPORAL_HINT, parse_temporal_checkpoint, read_state_dict
from ..errors import CheckpointError
from ..motion_module import MotionModuleSet
from .model_files import build_motion_modules, build_unet, sd15_unet_config
from .temporal import MOTION_ATTR, apply_temporal

log = logging.getLogger("MagicAnimate")

__all__ = ["TemporalLoad", "load_temporal_model"]


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
        sd15_unet_config(ckpt.spatial, path, TEMPORAL_HINT)  # validates the shapes before building anything
        base, missing, unused = build_unet(ckpt.spatial, path, TEMPORAL_HINT, weight_dtype)
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
