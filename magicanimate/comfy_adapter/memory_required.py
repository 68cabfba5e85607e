"""ComfyUI's memory estimate for the MagicAnimate MODEL: a window's real needs
(:mod:`magicanimate.window_device_memory`).

ComfyUI asks ``BaseModel.memory_required(input_shape, cond_shapes)`` twice: in ``prepare_sampling`` (batch ``2 x
frames`` and ``frames``, which decides how much VRAM the weights may take, i.e. full or low-VRAM loading) and in
``calc_cond_batch`` (whether the cond and uncond chunks of a window fit in one UNet call). The SD1.5 formula knows
nothing of motion modules, reference keys/values, ControlNet residuals or the appearance encoder.

Our estimate is a :class:`~magicanimate.window_device_memory.WindowMemory` kept in the clone's ``model_options`` and
read by two wrappers of the clone (``WrappersMP.PREPARE_SAMPLING`` and ``WrappersMP.CALC_COND_BATCH``). Each one answers
``memory_required`` with it only for the duration of the ComfyUI call it wraps (an instance attribute of the
``BaseModel``, removed on the way out, exceptions included), so a user's plain SD1.5 MODEL sharing that ``BaseModel``
never sees it. An object patch cannot do this: ComfyUI applies object patches when the model is loaded, which is
after ``prepare_sampling`` has estimated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import comfy.model_patcher
import torch
from comfy.patcher_extension import WrappersMP

from ..window_device_memory import WindowMemory, window_memory_bytes, window_memory_parts
from .dtypes import compute_dtype
from .keys import WINDOW_MEMORY

__all__ = ["install_memory_estimate", "update_memory_estimate", "window_memory_required", "window_memory_parts_for"]


def _dtype_bytes(dtype: torch.dtype | None) -> int:
    return (dtype or torch.float32).itemsize


def _spec(model_options: dict | None, base) -> WindowMemory | None:
    spec = (model_options or {}).get(WINDOW_MEMORY)
    if spec is None:
        return None
    return dataclasses.replace(spec, dtype_bytes=_dtype_bytes(compute_dtype(base)))


def _window_frames(total: int, model_options: dict) -> int:
    handler = model_options.get("context_handler")
    length = getattr(handler, "context_length", None)
    return min(int(total), int(length)) if length else int(total)


def _estimator(spec: WindowMemory, frames: int) -> Callable:
    def memory_required(input_shape, cond_shapes=None) -> int:
        batch = int(input_shape[0])
        chunks = max(1, -(-batch // frames))
        return window_memory_bytes(spec, min(frames, batch), chunks, int(input_shape[-2]), int(input_shape[-1]))

    return memory_required


@contextmanager
def _answering(base, estimator: Callable) -> Iterator[None]:
    """``base.memory_required`` is ``estimator`` inside (chained with a per-instance one already there, the larger
    answer winning), exactly what it was outside (instance attribute or none)."""
    had, previous = "memory_required" in vars(base), vars(base).get("memory_required")
    if had:  # someone else's per-instance answer (another pack, a test simulating a small card): keep the larger one
        def chained(input_shape, cond_shapes=None):
            return max(estimator(input_shape, cond_shapes), previous(input_shape, cond_shapes=cond_shapes))

        base.memory_required = chained
    else:
        base.memory_required = estimator
    try:
        yield
    finally:
        if had:
            base.memory_required = previous
        else:
            vars(base).pop("memory_required", None)


def _model_options(args: tuple, kwargs: dict, position: int) -> dict | None:
    """The ``model_options`` argument of a wrapped core call, passed by keyword or at ``position``."""
    if "model_options" in kwargs:
        return kwargs["model_options"]
    return args[position] if len(args) > position else None


# Both wrappers take and forward whatever else the running ComfyUI passes (newer cores add arguments such as
# ``force_full_load``): they read only the arguments every supported version has.
def _prepare_sampling_wrapper(executor, model, noise_shape, conds, *args, **kwargs):
    model_options = _model_options(args, kwargs, 0)
    spec = _spec(model_options, model.model)
    if spec is None:
        return executor(model, noise_shape, conds, *args, **kwargs)
    frames = _window_frames(noise_shape[0], model_options)
    with _answering(model.model, _estimator(spec, frames)):
        return executor(model, noise_shape, conds, *args, **kwargs)


def _calc_cond_batch_wrapper(executor, model, conds, x_in, timestep, *args, **kwargs):
    spec = _spec(_model_options(args, kwargs, 0), model)
    if spec is None:
        return executor(model, conds, x_in, timestep, *args, **kwargs)
    with _answering(model, _estimator(spec, int(x_in.shape[0]))):
        return executor(model, conds, x_in, timestep, *args, **kwargs)


def install_memory_estimate(model: comfy.model_patcher.ModelPatcher, spec: WindowMemory) -> None:
    """Make ComfyUI estimate ``model``'s memory with ``spec`` (in place; call on a clone)."""
    model.model_options[WINDOW_MEMORY] = spec
    for kind, wrapper in ((WrappersMP.PREPARE_SAMPLING, _prepare_sampling_wrapper),
                          (WrappersMP.CALC_COND_BATCH, _calc_cond_batch_wrapper)):
        model.remove_wrappers_with_key(kind, WINDOW_MEMORY)
        model.add_wrapper_with_key(kind, WINDOW_MEMORY, wrapper)


def update_memory_estimate(model: comfy.model_patcher.ModelPatcher, **changes) -> None:
    """Change fields of ``model``'s :class:`WindowMemory` (installing the default one first if it has none)."""
    spec = model.model_options.get(WINDOW_MEMORY) or WindowMemory(
        model_channels=int(model.model.diffusion_model.model_channels))
    install_memory_estimate(model, dataclasses.replace(spec, **changes))


def window_memory_parts_for(model: comfy.model_patcher.ModelPatcher, input_shape, frames: int) -> dict[str, int]:
    """The estimate's parts for a UNet input ``input_shape`` ``(chunks * frames, 4, h, w)`` (reports, tests)."""
    spec = _spec(model.model_options, model.model)
    chunks = max(1, -(-int(input_shape[0]) // frames))
    return window_memory_parts(spec, frames, chunks, int(input_shape[-2]), int(input_shape[-1]))


def window_memory_required(model: comfy.model_patcher.ModelPatcher, input_shape, frames: int) -> int:
    """What ``model``'s ``memory_required`` answers during sampling for ``input_shape`` and ``frames`` per window."""
    return _estimator(_spec(model.model_options, model.model), frames)(input_shape)
