"""Stage 1: turn a ComfyUI SD1.5 ``ModelPatcher`` into MagicAnimate's temporal denoiser.

- The 20 motion modules run right after the layer they follow in the reference (the last spatial transformer of a
  layer, or its ResBlock where there is none), before any Upsample. They are a submodule of the UNet,
  ``diffusion_model.motion_modules`` (keys ``diffusion_model.motion_modules.<checkpoint key>``), so ComfyUI loads,
  offloads and weight-patches them with it (LoRAs, merges, hooks); every SD1.5 UNet key stays as it was. The call
  is a per-instance ``forward`` override of the layer they follow, installed by a ``PatcherInjection``.
- ResBlock GroupNorms and the output GroupNorm take statistics jointly over the frames of a window
  (docs/ARCHITECTURE.md, "Denoiser structure").
- ``model_sampling`` becomes the reference's linear-beta schedule (:mod:`.model_sampling`).

All overrides fall through to the original forward unless a MagicAnimate forward is running (``frames`` set by the
DIFFUSION_MODEL wrapper), so a plain sampling run through the same UNet is never affected.
"""

from __future__ import annotations

from collections.abc import Callable

import comfy.context_windows
import comfy.ldm.modules.attention as comfy_attention
import comfy.model_patcher
import comfy.ops
import torch
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock
from comfy.patcher_extension import CallbacksMP, PatcherInjection, WrappersMP

from ..motion_module import MotionModuleSet, placements
from ..rows import chunk_length
from .composition_checks import install_core_sampler_check
from .context import SegmentHandler, SegmentOptions
from .dtypes import compute_dtype
from .keys import FRAMES_WRAPPER, POSITIONS_WRAPPER, RUN_CLEANUP_CALLBACK, TEMPORAL_INJECTIONS
from .memory_required import update_memory_estimate
from .model_sampling import make_model_sampling
from .model_tree import private_tree

__all__ = ["TemporalState", "apply_temporal", "motion_targets", "joint_norm_targets", "joint_group_norm",
           "MOTION_ATTR", "MOTION_PREFIX", "motion_modules_of", "set_segments"]

#: The motion modules' attribute on ComfyUI's ``UNetModel`` and their state-dict prefix on the MODEL.
MOTION_ATTR = "motion_modules"
MOTION_PREFIX = f"diffusion_model.{MOTION_ATTR}."


class TemporalState:
    """Frames of the window being denoised; ``None`` outside a MagicAnimate forward.

    Never deep-copied: ``ModelPatcher.clone`` deep-copies ``model_options`` (docs/ARCHITECTURE.md, "How each stage
    maps to ComfyUI").
    """

    def __init__(self) -> None:
        self.frames: int | None = None
        self.attention: Callable | None = None  # None: ComfyUI's optimized attention, looked up per call

    def __deepcopy__(self, memo: dict) -> TemporalState:
        return self


def motion_targets(diffusion_model: torch.nn.Module) -> list[tuple[torch.nn.Module, tuple[str, int, int]]]:
    """(layer to follow, (side, block, index)) for the 20 motion modules, in ComfyUI's UNet."""
    out = []
    for side, block, index, _width in placements((0, 0, 0, 0)):
        seq = (diffusion_model.input_blocks[1 + 3 * block + index] if side == "down"
               else diffusion_model.output_blocks[3 * block + index])
        layers = [m for m in seq if isinstance(m, SpatialTransformer)] or [m for m in seq if isinstance(m, ResBlock)]
        out.append((layers[-1], (side, block, index)))
    return out


def joint_norm_targets(diffusion_model: torch.nn.Module) -> list[torch.nn.Module]:
    """GroupNorms whose statistics span the window's frames: every ResBlock's two norms and the output norm."""
    norms = []
    for module in diffusion_model.modules():
        if isinstance(module, ResBlock):
            norms += [module.in_layers[0], module.out_layers[0]]
    return norms + [diffusion_model.out[0]]


def joint_group_norm(norm: torch.nn.GroupNorm, x: torch.Tensor, frames: int) -> torch.Tensor:
    """GroupNorm of ``x`` ``(chunks*f, C, h, w)`` with statistics over C/G x f x h x w per chunk.

    Equal to ``norm`` applied to the 5D ``(chunks, C, f, h, w)`` tensor, as the reference does, without its two
    transposed copies: statistics are reduced over a view and ``y = x * scale + shift`` is written once, with
    float32 statistics, scale and shift whatever ``x``'s dtype (as PyTorch's own GroupNorm kernel computes).
    """
    b, c, h, w = x.shape
    g = norm.num_groups
    x5 = x.view(b // frames, frames, g, c // g, h * w)
    dims = (1, 3, 4)
    if x.dtype == torch.float32:
        var, mean = torch.var_mean(x5, dim=dims, correction=0, keepdim=True)
    else:  # float32 accumulation without a float32 copy of x
        mean = x5.mean(dim=dims, keepdim=True, dtype=torch.float32)
        sq = torch.linalg.vector_norm(x5, 2, dim=dims, keepdim=True, dtype=torch.float32).square()
        var = (sq / (frames * (c // g) * h * w) - mean.square()).clamp_min(0)
    rstd = torch.rsqrt(var + norm.eps)
    offload_stream = None
    if getattr(norm, "comfy_cast_weights", False) or getattr(norm, "weight_function", None) or getattr(
            norm, "bias_function", None):
        weight, bias, offload_stream = comfy.ops.cast_bias_weight(norm, x, offloadable=True)
    else:
        weight, bias = norm.weight, norm.bias
    scale = rstd if weight is None else rstd * weight.to(torch.float32).view(1, 1, g, c // g, 1)
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias.to(torch.float32).view(1, 1, g, c // g, 1)
    if x.dtype == torch.float32:
        out = torch.addcmul(shift, x5, scale)
    elif torch.is_grad_enabled():
        out = torch.addcmul(shift, x5.float(), scale).to(x.dtype)
    else:  # computed in float32, written once in x's dtype
        out = torch.empty_like(x5)
        torch.addcmul(shift, x5, scale, out=out)
    if offload_stream is not None:
        comfy.ops.uncast_bias_weight(norm, weight, bias, offload_stream)
    return out.view(b, c, h, w)


def _joint_forward(norm: torch.nn.Module, state: TemporalState) -> Callable:
    original = norm.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        f = state.frames
        if f is None or f <= 1 or x.ndim != 4:
            return original(x)
        return joint_group_norm(norm, x, f)

    return forward


def motion_modules_of(diffusion_model: torch.nn.Module) -> MotionModuleSet | None:
    """The :class:`MotionModuleSet` attached to a ComfyUI UNet, or None for a plain SD1.5 UNet.

    Duck-typed: a second import of this package (a test harness, a reloaded pack) has its own class object.
    """
    modules = diffusion_model._modules.get(MOTION_ATTR)
    return modules if hasattr(modules, "module_at") and hasattr(modules, "prepare_positions") else None


def _motion_forward(layer: torch.nn.Module, modules: MotionModuleSet, where: tuple[str, int, int],
                    state: TemporalState) -> Callable:
    original = layer.forward

    def forward(*args, **kwargs) -> torch.Tensor:
        h = original(*args, **kwargs)
        f = state.frames
        if f is None:
            return h
        module = modules.module_at(*where)
        return module(h, f, state.attention or comfy_attention.optimized_attention)

    return forward


def _injection(state: TemporalState) -> PatcherInjection:
    def inject(patcher: comfy.model_patcher.ModelPatcher) -> None:
        dm = patcher.model.diffusion_model
        motion = motion_modules_of(dm)
        for layer, where in motion_targets(dm):
            layer.forward = _motion_forward(layer, motion, where, state)
        for norm in joint_norm_targets(dm):
            norm.forward = _joint_forward(norm, state)

    def eject(patcher: comfy.model_patcher.ModelPatcher) -> None:
        dm = patcher.model.diffusion_model
        for layer, _ in motion_targets(dm):
            layer.__dict__.pop("forward", None)
        for norm in joint_norm_targets(dm):
            norm.__dict__.pop("forward", None)

    return PatcherInjection(inject=inject, eject=eject)


def _frames_wrapper(state: TemporalState) -> Callable:
    def wrapper(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        previous = state.frames
        state.frames = chunk_length(transformer_options.get("cond_or_uncond"), x.shape[0])
        try:
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        finally:
            state.frames = previous

    return wrapper


def _positions_wrapper() -> Callable:
    def wrapper(executor, x, timestep, *args, **kwargs):
        # Outside the compiled forward: the motion modules' position tables on the sampling device, in the UNet's
        # compute dtype (a no-op after the first step; the module has no parameters, so low-VRAM loading leaves
        # its table on the CPU).
        model = executor.class_obj.inner_model
        motion_modules_of(model.diffusion_model).prepare_positions(x.device, compute_dtype(model))
        return executor(x, timestep, *args, **kwargs)

    return wrapper


def apply_temporal(model: comfy.model_patcher.ModelPatcher,
                   motion: MotionModuleSet | comfy.model_patcher.ModelPatcher,
                   segments: SegmentOptions | None = None, model_is_private: bool = False
                   ) -> comfy.model_patcher.ModelPatcher:
    """A MODEL that denoises videos (frames as batch) like MagicAnimate's 3D UNet, with ``motion`` in its tree.

    ``motion``: a :class:`MotionModuleSet` whose widths match the UNet (or a ``ModelPatcher`` wrapping one). It
    becomes ``diffusion_model.motion_modules`` of the returned MODEL. ``model_is_private``: nothing else holds
    ``model``'s module tree (a UNet the loader built from the checkpoint), so the result is a clone of ``model``;
    otherwise the result gets a new tree sharing ``model``'s weight storage (:func:`private_tree`) and ``model``
    itself is left exactly as it was.
    """
    dm = model.model.diffusion_model
    mm = motion.model if isinstance(motion, comfy.model_patcher.ModelPatcher) else motion
    if not isinstance(mm, MotionModuleSet):
        raise TypeError("motion must be a MotionModuleSet")
    if mm.block_out_channels[0] != dm.model_channels:
        raise ValueError(f"motion modules are {mm.block_out_channels[0]} channels wide but the UNet has "
                         f"{dm.model_channels}; the MODEL must be an SD1.5 UNet")
    if MOTION_ATTR in dm._modules or hasattr(dm, MOTION_ATTR):
        raise ValueError("the MODEL already has motion modules (it is a MagicAnimate MODEL); connect a plain SD1.5 "
                         "MODEL")
    state = TemporalState()
    m = model.clone() if model_is_private else private_tree(model)
    setattr(m.model.diffusion_model, MOTION_ATTR, mm)
    m.size = 0  # the clone copied the size without the motion modules
    m.add_object_patch("model_sampling", make_model_sampling())
    m.set_injections(TEMPORAL_INJECTIONS, [_injection(state)])
    m.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, FRAMES_WRAPPER, _frames_wrapper(state))
    m.add_wrapper_with_key(WrappersMP.PREDICT_NOISE, POSITIONS_WRAPPER, _positions_wrapper())
    m.add_callback_with_key(CallbacksMP.ON_CLEANUP, RUN_CLEANUP_CALLBACK, _end_run)
    install_core_sampler_check(m)
    update_memory_estimate(m, model_channels=int(dm.model_channels))  # a window's activations, not SD1.5's
    set_segments(m, segments or SegmentOptions())
    return m


def _end_run(patcher: comfy.model_patcher.ModelPatcher, *args, **kwargs) -> None:
    """``ON_CLEANUP`` (the sampler's run is over, interrupted or not): the window handler drops its per-run state."""
    handler = patcher.model_options.get("context_handler")
    end_run = getattr(handler, "end_run", None)
    if callable(end_run):
        end_run()


def set_segments(model: comfy.model_patcher.ModelPatcher, segments: SegmentOptions) -> None:
    """Install MagicAnimate's window handler on ``model`` (in place; call on a clone)."""
    model.model_options["context_handler"] = SegmentHandler(segments)
    comfy.context_windows.create_prepare_sampling_wrapper(model)
