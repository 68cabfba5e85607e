"""Install appearance (reference attention) and DensePose ControlNet conditioning on a temporal MagicAnimate MODEL.

Four wrappers share one :class:`ConditioningState` per patched model; the work itself lives in :mod:`.appearance`
and :mod:`.pose_residuals`.

Where the work happens (GPU and ``torch.compile``): everything that reads or fills a Python-side cache runs eagerly
outside ``diffusion_model`` (the part ``TorchCompileModel`` compiles): the encoder and the reference keys/values once
per step in the PREDICT_NOISE wrapper, the ControlNet once per window in the CALC_COND_BATCH wrapper. The compiled
forward only reads ready tensors, so it has no graph breaks, no host-device synchronisation and no guard on counters
(docs/ARCHITECTURE.md, "How each stage maps to ComfyUI").
"""

from __future__ import annotations

from collections.abc import Callable

import comfy.model_management
import comfy.model_patcher
import torch
from comfy.patcher_extension import WrappersMP

from ..frame_cache import FrameCache
from ..reference_attention import REFERENCE_BLOCKS
from ..rows import chunk_rows
from .appearance import attn1_modules, bank_for_call, bank_for_step, reference_replace
from .attention_chain import install_reference_attention
from .conditioning_state import ConditioningState
from .context import SegmentOptions
from .dtypes import compute_dtype
from .keys import CONDITIONING
from .memory_required import update_memory_estimate
from .payloads import Appearance, PoseCondition
from .pose_residuals import begin_step, merge_control, release_window, residuals_for_batch, residuals_for_window
from .temporal import set_segments

__all__ = ["apply_conditioning"]


def _diffusion_wrapper(state: ConditioningState) -> Callable:
    """Inside ``diffusion_model`` (compiled by TorchCompileModel): only reads what the eager wrappers prepared.

    Outside a sampler (a direct UNet call, as some tests do) the encoder bank is filled here on first use.
    """
    def wrapper(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        if state.appearance is not None:
            bank_for_call(state, x, timesteps, context, transformer_options)
        if state.window_control is not None:
            chunks = len(chunk_rows(transformer_options.get("cond_or_uncond"), x.shape[0]))
            control = merge_control(residuals_for_batch(state, chunks), control)
        return executor(x, timesteps, context, y, control, transformer_options, **kwargs)

    return wrapper


def _positive_context(conds: list) -> torch.Tensor | None:
    """The first positive cond's text context ``(1, 77, C)``, from ComfyUI's processed conds (a fallback)."""
    for c in (conds[0] or []) if conds else []:
        ca = c.get("model_conds", {}).get("c_crossattn")
        if ca is not None:
            return ca.cond
    return None


def _calc_cond_batch_wrapper(state: ConditioningState) -> Callable:
    def wrapper(executor, model, conds, x_in, timestep, model_options, *args, **kwargs):
        # One call per window (both CFG halves); interruption is honoured between windows.
        comfy.model_management.throw_exception_if_processing_interrupted()
        window = model_options.get("transformer_options", {}).get("context_window")
        frame_ids = list(window.index_list) if window is not None else list(range(x_in.shape[0]))
        if state.pose is not None:
            state.window_control = residuals_for_window(state, model, x_in, timestep, frame_ids,
                                                        _positive_context(conds))
        try:
            out = executor(model, conds, x_in, timestep, model_options, *args, **kwargs)
        finally:
            state.window_control = None
        release_window(state, frame_ids)
        state.stats["windows"] += 1
        if state.on_window is not None:
            state.on_window()
        return out

    return wrapper


def _predict_noise_wrapper(state: ConditioningState) -> Callable:
    def wrapper(executor, x, timestep, *args, **kwargs):
        # A new model evaluation: ControlNet residuals and the reference bank depend on the step.
        state.control_cache, state.window_control = FrameCache(), None
        model = executor.class_obj.inner_model
        sigma = timestep[:1]
        state.step_t = model.model_sampling.timestep(sigma).to(device=x.device, dtype=torch.float32)
        if state.pose is not None:
            begin_step(state, x, sigma)
        if state.appearance is not None:
            bank_for_step(state, model, x.device)
        return executor(x, timestep, *args, **kwargs)

    return wrapper


def _outer_sample_wrapper(state: ConditioningState) -> Callable:
    def wrapper(executor, *args, **kwargs):
        state.reset()
        # The conditional text for the appearance encoder and the ControlNet, even if ComfyUI runs the uncond half
        # in a separate, earlier call (low memory).
        positive = getattr(executor.class_obj, "original_conds", {}).get("positive") or []
        if positive and isinstance(positive[0].get("cross_attn"), torch.Tensor):
            state.cond_context = positive[0]["cross_attn"][:1].detach()
        if state.pose is not None:
            ms = executor.class_obj.model_patcher.get_model_object("model_sampling")
            pose = state.pose
            state.sigma_range = (float(ms.percent_to_sigma(pose.start_percent)),
                                 float(ms.percent_to_sigma(pose.end_percent)))
        try:
            return executor(*args, **kwargs)
        finally:
            state.reset()

    return wrapper


def apply_conditioning(model: comfy.model_patcher.ModelPatcher, appearance: Appearance | None,
                       pose: PoseCondition | None, segments: SegmentOptions | None = None,
                       on_window: Callable[[], None] | None = None
                       ) -> tuple[comfy.model_patcher.ModelPatcher, ConditioningState]:
    """A clone of a temporal MagicAnimate model with reference attention and DensePose control installed.

    ``on_window`` is called after every window evaluation (for progress bars).
    """
    m = model.clone()
    dm = m.model.diffusion_model
    state = ConditioningState(appearance=appearance, pose=pose, segments=segments or SegmentOptions(),
                              attn1=attn1_modules(dm), on_window=on_window)
    if appearance is not None:
        # Chained into replaces other nodes put on these blocks (SAG, PAG), see attention_chain.
        install_reference_attention(m, reference_replace(state), list(REFERENCE_BLOCKS))
    m.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, CONDITIONING, _diffusion_wrapper(state))
    m.add_wrapper_with_key(WrappersMP.PREDICT_NOISE, CONDITIONING, _predict_noise_wrapper(state))
    m.add_wrapper_with_key(WrappersMP.CALC_COND_BATCH, CONDITIONING, _calc_cond_batch_wrapper(state))
    m.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, CONDITIONING, _outer_sample_wrapper(state))
    extra = []
    if appearance is not None:
        extra.append(appearance.encoder.patcher)
    if pose is not None:
        extra.append(pose.control_net.control_model_wrapped)
    if extra:
        m.set_additional_models(CONDITIONING, extra)
    if segments is not None:
        set_segments(m, segments)
    _estimate_window_memory(m, appearance, pose, state.segments)
    return m, state


def _estimate_window_memory(m: comfy.model_patcher.ModelPatcher, appearance: Appearance | None,
                            pose: PoseCondition | None, segments: SegmentOptions) -> None:
    """ComfyUI's estimate for ``m`` covers the reference tokens, the residual cache and the two extra networks."""
    changes: dict = {"reference_images": 0, "control": False, "held_frames": 0}
    if appearance is not None:
        changes.update(reference_images=int(appearance.latent.shape[0]),
                       encoder_dtype_bytes=compute_dtype(appearance.encoder.patcher.model).itemsize)
    if pose is not None:
        # The closed loop's last window reuses the first frames: their residuals are kept from the first window on.
        changes.update(control=True, control_dtype_bytes=compute_dtype(pose.control_net).itemsize,
                       held_frames=segments.overlap if segments.closed_loop else 0)
    update_memory_estimate(m, **changes)
