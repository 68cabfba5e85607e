"""Stage 2: appearance (reference attention) and DensePose ControlNet conditioning of the temporal denoiser.

Per model evaluation (one sampler step), inside ComfyUI's sampling:
- the appearance encoder runs once, at batch K (1 to 4 reference images), on the clean reference latents at the
  current timestep with the conditional text context, and stops right after its last captured ``norm1`` (spec
  section 4; finding B6); the K images' tokens of each block are concatenated along the token axis (keys and values
  concatenate, spec section 6 item 20), so one image is exactly the reference;
- the 10 mid/up self-attentions of the denoiser get the reference tokens as extra keys/values for conditional rows only;
  the reference keys/values are projected once per block per step and shared by all frames and windows;
- the ControlNet runs once per frame per step on that frame's own noisy latent with the conditional text context, and
  its residuals are shared by both CFG halves and by every window holding the frame (core ComfyUI would feed every
  window the first frames' hints, finding B2). Frames are dropped from the cache once no later window needs them, so
  memory does not grow with video length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import comfy.controlnet
import comfy.model_management
import comfy.model_patcher
import comfy.utils
import torch
from comfy.ldm.modules.attention import SpatialTransformer, optimized_attention
from comfy.patcher_extension import WrappersMP

from ..reference_attention import REFERENCE_BLOCKS, reference_self_attention
from ..windows import frame_counts
from .context import SegmentOptions
from .model_files import AppearanceEncoderModel
from .temporal import KEY, chunk_frames, set_segments

__all__ = ["Appearance", "PoseCondition", "ConditioningState", "apply_conditioning", "prepare_hints"]


@dataclass
class Appearance:
    """The AppearanceEncode node's output: encoder + reference latents ``(K, 4, h, w)``, K = 1..4 reference images
    of the same person (unscaled VAE space)."""

    encoder: AppearanceEncoderModel
    latent: torch.Tensor


@dataclass
class PoseCondition:
    """The PoseControl node's output: a ControlNet and its pose frames ``(T, H, W, 3)`` in [0, 1]."""

    control_net: comfy.controlnet.ControlNet
    frames: torch.Tensor
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    fit: str = "stretch"


class _StopEncoder(Exception):
    """Raised from the capture patch after the last needed block; the encoder's tail is never run."""


def prepare_hints(frames: torch.Tensor, num_frames: int, height: int, width: int) -> torch.Tensor:
    """Pose frames ``(T, H, W, 3)`` -> hints ``(num_frames, 3, height, width)`` float32 on the CPU.

    Frames are edge-padded with the last frame (spec 1.6) or cut to ``num_frames``, and resized with antialiased
    bicubic filtering when their size differs (callers fit them beforehand for the reference's exact pixels).
    """
    hints = frames[..., :3].movedim(-1, 1).to(torch.float32)
    t = hints.shape[0]
    if t < num_frames:
        hints = torch.cat([hints, hints[-1:].expand(num_frames - t, -1, -1, -1)], dim=0)
    hints = hints[:num_frames]
    if hints.shape[-2:] != (height, width):
        hints = torch.nn.functional.interpolate(hints, size=(height, width), mode="bicubic", antialias=True,
                                                align_corners=False).clamp(0, 1)
    return hints.contiguous()


@dataclass
class ConditioningState:
    """Per-run caches. Created per patched model; never deep-copied (ComfyUI deep-copies model_options, G3)."""

    appearance: Appearance | None
    pose: PoseCondition | None
    segments: SegmentOptions
    attn1: dict[tuple[str, int, int], torch.nn.Module]
    bank_t: float | None = None
    bank: dict = field(default_factory=dict)
    kv: dict = field(default_factory=dict)
    cond_context: torch.Tensor | None = None
    hints: torch.Tensor | None = None
    control_cache: dict = field(default_factory=dict)
    control_uses: list[int] = field(default_factory=list)
    sigma_range: tuple[float, float] = (float("inf"), 0.0)
    stats: dict = field(default_factory=lambda: {"encoder_runs": 0, "control_frames": 0, "windows": 0})
    on_window: Callable[[], None] | None = None

    def __deepcopy__(self, memo: dict) -> ConditioningState:
        return self

    def reset(self) -> None:
        self.bank_t, self.bank, self.kv = None, {}, {}
        self.cond_context, self.hints = None, None
        self.control_cache, self.control_uses = {}, []


def _attn1_modules(diffusion_model: torch.nn.Module) -> dict[tuple[str, int, int], torch.nn.Module]:
    out = {}
    for kind, block, index in REFERENCE_BLOCKS:
        seq = diffusion_model.middle_block if kind == "middle" else diffusion_model.output_blocks[block]
        st = [m for m in seq if isinstance(m, SpatialTransformer)][0]
        out[(kind, block, index)] = st.transformer_blocks[index].attn1
    return out


def _cond_rows(x_batch: int, transformer_options: dict) -> slice | None:
    cu = transformer_options.get("cond_or_uncond") or [0]
    f = x_batch // len(cu)
    if 0 not in cu:
        return None
    i = list(cu).index(0)
    return slice(i * f, (i + 1) * f)


def _run_encoder(state: ConditioningState, t: torch.Tensor, context: torch.Tensor) -> None:
    """Fill ``state.bank`` with the encoder's norm1 outputs of the 10 mid/up blocks at timestep t.

    K reference latents run as one batch; each block's ``(K, N, C)`` tokens become ``(1, K*N, C)`` (image 0's tokens
    first), so the denoiser's conditional rows attend to every image's tokens at once.
    """
    enc = state.appearance.encoder.patcher.model
    dm = enc.diffusion_model
    dtype = enc.manual_cast_dtype or enc.get_dtype()
    device = context.device
    latent = enc.process_latent_in(state.appearance.latent.to(device=device, dtype=torch.float32))
    bank: dict = {}
    last = REFERENCE_BLOCKS[-1]

    def capture(n, context_attn1, value_attn1, extra):
        key = (extra["block"][0], extra["block"][1], extra.get("block_index", 0))
        if key in state.attn1:
            bank[key] = n.detach().reshape(1, -1, n.shape[-1])
            if key == last:
                raise _StopEncoder
        return n, context_attn1, value_attn1

    k = latent.shape[0]
    try:
        dm(latent.to(dtype), t[:1].to(dtype).expand(k),
           context=context[:1].to(device=device, dtype=dtype).expand(k, -1, -1),
           transformer_options={"patches": {"attn1_patch": [capture]}})
    except _StopEncoder:
        pass
    if len(bank) != len(REFERENCE_BLOCKS):
        raise RuntimeError(f"appearance encoder produced {len(bank)} of {len(REFERENCE_BLOCKS)} reference features")
    state.bank, state.kv = bank, {}
    state.stats["encoder_runs"] += 1


def _reference_replace(state: ConditioningState) -> Callable:
    def attn1_replace(q, k, v, extra):
        key = (extra["block"][0], extra["block"][1], extra.get("block_index", 0))
        tokens = state.bank.get(key)
        if tokens is None:
            return optimized_attention(q, k, v, extra["n_heads"], attn_precision=extra.get("attn_precision"))
        if key not in state.kv:
            attn1 = state.attn1[key]
            tokens = tokens.to(device=q.device, dtype=q.dtype)
            state.kv[key] = (attn1.to_k(tokens), attn1.to_v(tokens))
        k_ref, v_ref = state.kv[key]

        def attention(q_, k_, v_, heads):
            return optimized_attention(q_, k_, v_, heads, attn_precision=extra.get("attn_precision"))

        return reference_self_attention(q, k, v, k_ref, v_ref, extra["cond_or_uncond"], extra["n_heads"], attention)

    return attn1_replace


def _control_for_window(state: ConditioningState, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                        frame_ids: list[int], transformer_options: dict) -> dict | None:
    pose = state.pose
    sigma = float(transformer_options["sigmas"][0]) if "sigmas" in transformer_options else 0.0
    hi, lo = state.sigma_range
    if not (lo <= sigma <= hi):
        return None
    cn = pose.control_net
    cu = transformer_options.get("cond_or_uncond") or [0]
    rows = _cond_rows(x.shape[0], transformer_options)
    base = rows.start if rows is not None else 0
    todo = [j for j, i in enumerate(frame_ids) if i not in state.control_cache]
    if todo:
        if state.hints is None or state.hints.shape[0] < max(frame_ids) + 1:
            raise RuntimeError("pose hints were not prepared for this video length")
        dtype = cn.manual_cast_dtype or cn.control_model.dtype
        idx = torch.tensor([base + j for j in todo], device=x.device)
        ids = [frame_ids[j] for j in todo]
        hint = state.hints[torch.tensor(ids)].to(device=x.device, dtype=dtype)
        ctx = state.cond_context if state.cond_context is not None else context[base:base + 1]
        ctx = ctx.to(device=x.device, dtype=dtype).expand(len(todo), -1, -1)
        out = cn.control_model(x=x.index_select(0, idx).to(dtype), hint=hint,
                               timesteps=timesteps.index_select(0, idx).to(dtype), context=ctx)
        state.stats["control_frames"] += len(todo)
        for n, i in enumerate(ids):
            state.control_cache[i] = ([o[n:n + 1] for o in out["output"]], [o[n:n + 1] for o in out["middle"]])
    strength = float(pose.strength)
    control = {"input": [], "output": [], "middle": []}
    for name, slot in (("output", 0), ("middle", 1)):
        per_frame = [state.control_cache[i][slot] for i in frame_ids]
        for level in range(len(per_frame[0])):
            r = torch.cat([p[level] for p in per_frame], dim=0)
            r = (r * strength).to(x.dtype)
            control[name].append(r.repeat(len(cu), 1, 1, 1) if len(cu) > 1 else r)
    return control


def _release_window(state: ConditioningState, frame_ids: list[int]) -> None:
    """Forget the residuals of frames no later window of this evaluation needs (flat memory in video length).

    Called once per window, after both CFG halves ran (ComfyUI may run them in separate calls when memory is short).
    """
    if not state.control_uses:
        return
    for i in frame_ids:
        if i < len(state.control_uses):
            state.control_uses[i] -= 1
            if state.control_uses[i] <= 0:
                state.control_cache.pop(i, None)


def _merge_control(ours: dict | None, theirs: dict | None) -> dict | None:
    """Sum our residuals with those of ControlNets applied through core nodes (fresh lists: UNet pops them)."""
    if theirs is None:
        return ours
    if ours is None:
        return {k: list(v) for k, v in theirs.items()}
    out = {}
    for key in set(ours) | set(theirs):
        a, b = list(ours.get(key, [])), list(theirs.get(key, []))
        n = max(len(a), len(b))
        merged = []
        for i in range(n):
            xa = a[i] if i < len(a) else None
            xb = b[i] if i < len(b) else None
            merged.append(xb if xa is None else xa if xb is None else xa + xb)
        out[key] = merged
    return out


def _diffusion_wrapper(state: ConditioningState) -> Callable:
    def wrapper(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        rows = _cond_rows(x.shape[0], transformer_options)
        if rows is not None and state.cond_context is None:
            state.cond_context = context[rows.start:rows.start + 1].detach()
        f = chunk_frames(x.shape[0], transformer_options)
        window = transformer_options.get("context_window")
        frame_ids = list(window.index_list) if window is not None else list(range(f))
        if state.appearance is not None:
            t_key = float(timesteps[0])
            if state.bank_t != t_key:
                ctx = state.cond_context if state.cond_context is not None else context[:1]
                _run_encoder(state, timesteps, ctx)
                state.bank_t = t_key
        if state.pose is not None:
            ours = _control_for_window(state, x, timesteps, context, frame_ids, transformer_options)
            control = _merge_control(ours, control)
        return executor(x, timesteps, context, y, control, transformer_options, **kwargs)

    return wrapper


def _calc_cond_batch_wrapper(state: ConditioningState) -> Callable:
    def wrapper(executor, model, conds, x_in, timestep, model_options):
        # One call per window (both CFG halves); interruption is honoured between windows.
        comfy.model_management.throw_exception_if_processing_interrupted()
        out = executor(model, conds, x_in, timestep, model_options)
        window = model_options.get("transformer_options", {}).get("context_window")
        _release_window(state, list(window.index_list) if window is not None else list(range(x_in.shape[0])))
        state.stats["windows"] += 1
        if state.on_window is not None:
            state.on_window()
        return out

    return wrapper


def _predict_noise_wrapper(state: ConditioningState) -> Callable:
    def wrapper(executor, x, timestep, model_options=None, seed=None):
        # A new model evaluation: ControlNet residuals depend on x_t, so start a fresh per-frame cache.
        state.control_cache = {}
        num_frames = x.shape[0]
        if state.pose is not None:
            if state.hints is None or state.hints.shape[0] != num_frames or state.hints.shape[-2:] != (
                    x.shape[-2] * 8, x.shape[-1] * 8):
                state.hints = prepare_hints(state.pose.frames, num_frames, x.shape[-2] * 8, x.shape[-1] * 8)
            # One window of all frames when the video fits in a segment (as the context handler does).
            state.control_uses = frame_counts(state.segments.windows(num_frames), num_frames)
        return executor(x, timestep, model_options, seed)

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
                              attn1=_attn1_modules(dm), on_window=on_window)
    if appearance is not None:
        replace = _reference_replace(state)
        for kind, block, index in REFERENCE_BLOCKS:
            m.set_model_attn1_replace(replace, kind, block, index)
    m.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, KEY + "_conditioning", _diffusion_wrapper(state))
    m.add_wrapper_with_key(WrappersMP.PREDICT_NOISE, KEY + "_conditioning", _predict_noise_wrapper(state))
    m.add_wrapper_with_key(WrappersMP.CALC_COND_BATCH, KEY + "_conditioning", _calc_cond_batch_wrapper(state))
    m.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, KEY + "_conditioning", _outer_sample_wrapper(state))
    extra = []
    if appearance is not None:
        extra.append(appearance.encoder.patcher)
    if pose is not None:
        extra.append(pose.control_net.control_model_wrapped)
    if extra:
        m.set_additional_models(KEY + "_conditioning", extra)
    if segments is not None:
        set_segments(m, segments)
    return m, state
