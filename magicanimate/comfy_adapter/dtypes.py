"""The dtype a ComfyUI network computes in."""

from __future__ import annotations

import comfy.controlnet
import comfy.model_base
import torch

__all__ = ["compute_dtype"]


def compute_dtype(model: comfy.model_base.BaseModel | comfy.controlnet.ControlBase) -> torch.dtype:
    """The dtype ``model`` computes in: ComfyUI's manual-cast dtype when it has one, else its weights' dtype.

    ``model``: a ``BaseModel`` (weights' dtype from ``get_dtype()``) or a core ``ControlNet`` (weights' dtype from its
    ``control_model``).
    """
    if model.manual_cast_dtype is not None:
        return model.manual_cast_dtype
    control_model = getattr(model, "control_model", None)
    return control_model.dtype if control_model is not None else model.get_dtype()
