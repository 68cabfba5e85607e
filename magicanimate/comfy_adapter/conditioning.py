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

Where the work happens (GPU and ``torch.compile``): everything that reads or fills a Python-side cache runs eagerly
outside ``diffusion_model`` (the part ``TorchCompileModel`` compiles): the encoder and the reference keys/values once
per step in the PREDICT_NOISE wrapper, the ControlNet once per window in the CALC_COND_BATCH wrapper. The compiled
forward only reads ready tensors, so it has no graph breaks, no host-device synchronisation and no guard on counters.
Timesteps reach the encoder and the ControlNet in float32, as they reach the UNet (a bf16 961 would be 960).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import comfy.controlnet
import comfy.ldm.modules.attention as comfy_attention
import comfy.model_management
import comfy.model_patcher
import comfy.utils
import torch
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import forward_timestep_embed, timestep_embedding
from comfy.patcher_extension import WrappersMP

from ..reference_attention import REFERENCE_BLOCKS, reference_self_attention
from ..windows import frame_counts
from .attention_chain import install_reference_attention
from .context import SegmentOptions
from .memory_estimate import update_memory_estimate
from .model_files import AppearanceEncoderModel
from .temporal import KEY, set_segments

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
    """Per-run caches. Created per patched model; never deep-copied (ComfyUI deep-copies model_options, G3).

    ``hints``: ``(F, 3, H, W)`` on the host in the ControlNet's compute dtype (pinned on CUDA, copied per new frame
    without a sync); ``control_cache``: frame -> per-level residuals ``(1, C, h, w)`` already scaled by the strength
    and in the UNet's compute dtype, each in its own storage (a frame kept for a later window never pins its whole
    ControlNet batch); ``window_control``: the current window's per-frame residuals per level (``[(1, C, h, w)] * f``),
    concatenated only for the UNet call that uses them.
    """

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
    window_control: dict | None = None
    control_active: bool = True
    step_t: torch.Tensor | None = None
    sigma_range: tuple[float, float] = (float("inf"), 0.0)
    stats: dict = field(default_factory=lambda: {"encoder_runs": 0, "control_frames": 0, "windows": 0})
    on_window: Callable[[], None] | None = None

    def __deepcopy__(self, memo: dict) -> ConditioningState:
        return self

    def reset(self) -> None:
        self.bank_t, self.bank, self.kv = None, {}, {}
        self.cond_context, self.hints = None, None
        self.control_cache, self.control_uses = {}, []
        self.window_control, self.control_active, self.step_t = None, True, None


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


def _runs(values: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs ``[(start, stop), ...]`` of a list of ints (slices instead of index tensors: no H2D copy)."""
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and runs[-1][1] == v:
            runs[-1] = (runs[-1][0], v + 1)
        else:
            runs.append((v, v + 1))
    return runs


def _take(t: torch.Tensor, runs: list[tuple[int, int]]) -> torch.Tensor:
    parts = [t[a:b] for a, b in runs]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


def _encoder_features(dm: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                      capture: Callable) -> torch.Tensor:
    """Run ComfyUI's UNet ``dm`` up to the ``norm1`` of output block 11's transformer; returns that ``(B, N, C)``.

    The same layer sequence as ``UNetModel._forward`` (its attn1 patches capture the other nine blocks), stopped
    without an exception: the encoder's tail is absent from the file and never run (finding B6).
    """
    opts: dict = {"patches": {"attn1_patch": [capture]}, "transformer_index": 0}
    emb = dm.time_embed(timestep_embedding(t, dm.model_channels, repeat_only=False).to(x.dtype))
    hs, h = [], x
    for i, module in enumerate(dm.input_blocks):
        opts["block"] = ("input", i)
        h = forward_timestep_embed(module, h, emb, context, opts)
        hs.append(h)
    opts["block"] = ("middle", 0)
    h = forward_timestep_embed(dm.middle_block, h, emb, context, opts)
    last = len(dm.output_blocks) - 1
    for i, module in enumerate(dm.output_blocks[:last]):
        opts["block"] = ("output", i)
        h = torch.cat([h, hs.pop()], dim=1)
        h = forward_timestep_embed(module, h, emb, context, opts, hs[-1].shape)
    h = torch.cat([h, hs.pop()], dim=1)
    res, st = dm.output_blocks[last][0], dm.output_blocks[last][1]
    h = st.proj_in(st.norm(res(h, emb)))
    return st.transformer_blocks[0].norm1(h.movedim(1, 3).flatten(1, 2))


def _run_encoder(state: ConditioningState, t: torch.Tensor, context: torch.Tensor) -> None:
    """Fill ``state.bank`` with the encoder's norm1 outputs of the 10 mid/up blocks at timestep t.

    Runs on ``t``'s device (the sampling device; the text context may be kept on the CPU by ComfyUI) with ``t`` in
    float32 (the UNet's own timestep dtype). K reference latents run as one batch; each block's ``(K, N, C)`` tokens
    become ``(1, K*N, C)`` (image 0's tokens first), so the denoiser's conditional rows attend to every image's tokens.
    """
    enc = state.appearance.encoder.patcher.model
    dm = enc.diffusion_model
    dtype = enc.manual_cast_dtype or enc.get_dtype()
    device = t.device
    latent = enc.process_latent_in(state.appearance.latent.to(device=device, dtype=torch.float32))
    bank: dict = {}
    last = REFERENCE_BLOCKS[-1]

    def capture(n, context_attn1, value_attn1, extra):
        key = (extra["block"][0], extra["block"][1], extra.get("block_index", 0))
        if key in state.attn1:
            bank[key] = n.detach().reshape(1, -1, n.shape[-1])
        return n, context_attn1, value_attn1

    k = latent.shape[0]
    features = _encoder_features(dm, latent.to(dtype), t[:1].to(torch.float32).expand(k),
                                 context[:1].to(device=device, dtype=dtype).expand(k, -1, -1), capture)
    bank[last] = features.detach().reshape(1, -1, features.shape[-1])
    if len(bank) != len(REFERENCE_BLOCKS):
        raise RuntimeError(f"appearance encoder produced {len(bank)} of {len(REFERENCE_BLOCKS)} reference features")
    state.bank, state.kv = bank, {}
    state.stats["encoder_runs"] += 1


def _project_reference(state: ConditioningState, device: torch.device, dtype: torch.dtype) -> None:
    """Reference keys/values ``(1, M, C)`` of every block, once per step, in the UNet's compute dtype."""
    kv = {}
    for key, tokens in state.bank.items():
        attn1 = state.attn1[key]
        tokens = tokens.to(device=device, dtype=dtype)
        kv[key] = (attn1.to_k(tokens), attn1.to_v(tokens))
    state.kv = kv


def _reference_replace(state: ConditioningState) -> Callable:
    def attn1_replace(q, k, v, extra):
        key = (extra["block"][0], extra["block"][1], extra.get("block_index", 0))
        ref = state.kv.get(key)
        if ref is None:
            return comfy_attention.optimized_attention(q, k, v, extra["n_heads"],
                                                       attn_precision=extra.get("attn_precision"))
        k_ref, v_ref = ref

        def attention(q_, k_, v_, heads):
            return comfy_attention.optimized_attention(q_, k_, v_, heads, attn_precision=extra.get("attn_precision"))

        return reference_self_attention(q, k, v, k_ref, v_ref, extra["cond_or_uncond"], extra["n_heads"], attention)

    return attn1_replace


def _compute_dtype(model: torch.nn.Module) -> torch.dtype:
    return model.manual_cast_dtype or model.get_dtype()


def _control_for_window(state: ConditioningState, model, x: torch.Tensor, sigmas: torch.Tensor,
                        frame_ids: list[int], context: torch.Tensor | None = None) -> dict | None:
    """The window's ControlNet residuals ``{"output": [(f, C, h, w), ...], "middle": [...]}`` (compute dtype, scaled).

    ``x``: the window's noisy latents ``(f, 4, h, w)`` in sigma space, ``sigmas`` ``(f,)``. Frames not yet in the
    per-frame cache go through the ControlNet in one batch; all others are reused (eager code, outside the compile).
    """
    if not state.control_active:
        return None
    pose = state.pose
    cn = pose.control_net
    todo = [j for j, i in enumerate(frame_ids) if i not in state.control_cache]
    out_dtype = _compute_dtype(model)
    if todo:
        if state.hints is None or state.hints.shape[0] < max(frame_ids) + 1:
            raise RuntimeError("pose hints were not prepared for this video length")
        dtype = cn.manual_cast_dtype or cn.control_model.dtype
        ids = [frame_ids[j] for j in todo]
        hint = _take(state.hints, _runs(ids)).to(device=x.device, dtype=dtype, non_blocking=True)
        pos = _runs(todo)
        sigma = _take(sigmas, pos)
        xc = model.model_sampling.calculate_input(sigma, _take(x, pos))
        if state.step_t is not None:
            t = state.step_t.to(x.device).expand(len(todo))
        else:
            t = model.model_sampling.timestep(sigma)
        ctx = state.cond_context if state.cond_context is not None else context
        ctx = ctx[:1].to(device=x.device, dtype=dtype).expand(len(todo), -1, -1)
        out = cn.control_model(x=xc.to(dtype), hint=hint, timesteps=t.to(torch.float32), context=ctx)
        state.stats["control_frames"] += len(todo)
        strength = float(pose.strength)
        scaled = {}
        for name in ("output", "middle"):
            scaled[name] = [(o if strength == 1.0 else o * strength).to(out_dtype) for o in out[name]]
        for n, i in enumerate(ids):
            state.control_cache[i] = ([o[n:n + 1].clone() for o in scaled["output"]],
                                      [o[n:n + 1].clone() for o in scaled["middle"]])
        del out, scaled
    control: dict = {"input": [], "output": [], "middle": []}
    for name, slot in (("output", 0), ("middle", 1)):
        per_frame = [state.control_cache[i][slot] for i in frame_ids]
        control[name] = [[p[level] for p in per_frame] for level in range(len(per_frame[0]))]
    return control


def _window_control(state: ConditioningState, chunks: int) -> dict | None:
    """The current window's residuals ``(chunks*f, C, h, w)`` per level for a batch of ``chunks`` cond/uncond chunks:
    one concatenation of the cached frames (no per-window copy held besides the one the UNet pops level by level)."""
    if state.window_control is None:
        return None
    return {name: [parts[0] if len(parts) * chunks == 1 else torch.cat(parts * chunks, dim=0) for parts in levels]
            for name, levels in state.window_control.items()}


def _release_window(state: ConditioningState, frame_ids: list[int]) -> None:
    """Forget the residuals of frames no later window of this evaluation needs (flat memory in video length).

    Called once per window, after both CFG halves ran (ComfyUI may run them in separate calls when memory is short).
    """
    state.window_control = None
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
    """Inside ``diffusion_model`` (compiled by TorchCompileModel): only reads what the eager wrappers prepared.

    Outside a sampler (a direct UNet call, as some tests do) the encoder bank is filled here on first use.
    """
    def wrapper(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        if state.appearance is not None and not state.kv:
            rows = _cond_rows(x.shape[0], transformer_options)
            ctx = state.cond_context if state.cond_context is not None else context[rows or slice(0, 1)][:1]
            _run_encoder(state, timesteps, ctx)
            _project_reference(state, x.device, x.dtype)
        if state.window_control is not None:
            chunks = len(transformer_options.get("cond_or_uncond") or [0])
            control = _merge_control(_window_control(state, chunks), control)
        return executor(x, timesteps, context, y, control, transformer_options, **kwargs)

    return wrapper


def _calc_cond_batch_wrapper(state: ConditioningState) -> Callable:
    def wrapper(executor, model, conds, x_in, timestep, model_options, *args, **kwargs):
        # One call per window (both CFG halves); interruption is honoured between windows.
        comfy.model_management.throw_exception_if_processing_interrupted()
        window = model_options.get("transformer_options", {}).get("context_window")
        frame_ids = list(window.index_list) if window is not None else list(range(x_in.shape[0]))
        if state.pose is not None:
            state.window_control = _control_for_window(state, model, x_in, timestep, frame_ids,
                                                       _positive_context(conds))
        try:
            out = executor(model, conds, x_in, timestep, model_options, *args, **kwargs)
        finally:
            state.window_control = None
        _release_window(state, frame_ids)
        state.stats["windows"] += 1
        if state.on_window is not None:
            state.on_window()
        return out

    return wrapper


def _positive_context(conds: list) -> torch.Tensor | None:
    """The first positive cond's text context ``(1, 77, C)``, from ComfyUI's processed conds (a fallback)."""
    for c in (conds[0] or []) if conds else []:
        ca = c.get("model_conds", {}).get("c_crossattn")
        if ca is not None:
            return ca.cond
    return None


def _predict_noise_wrapper(state: ConditioningState) -> Callable:
    def wrapper(executor, x, timestep, *args, **kwargs):
        # A new model evaluation: ControlNet residuals and the reference bank depend on the step.
        state.control_cache, state.window_control = {}, None
        num_frames = x.shape[0]
        model = executor.class_obj.inner_model
        ms = model.model_sampling
        sigma = timestep[:1]
        state.step_t = ms.timestep(sigma).to(device=x.device, dtype=torch.float32)
        if state.pose is not None:
            size = (x.shape[-2] * 8, x.shape[-1] * 8)
            if state.hints is None or state.hints.shape[0] != num_frames or state.hints.shape[-2:] != size:
                cn = state.pose.control_net
                hints = prepare_hints(state.pose.frames, num_frames, *size).to(cn.manual_cast_dtype
                                                                               or cn.control_model.dtype)
                state.hints = hints.pin_memory() if x.device.type == "cuda" and torch.cuda.is_available() else hints
            # One window of all frames when the video fits in a segment (as the context handler does).
            state.control_uses = frame_counts(state.segments.windows(num_frames), num_frames)
            hi, lo = state.sigma_range
            state.bank_t = float(sigma[0])  # the one host-device synchronisation per step
            state.control_active = lo <= state.bank_t <= hi
        if state.appearance is not None:
            if state.cond_context is not None:
                _run_encoder(state, state.step_t, state.cond_context)
                _project_reference(state, x.device, _compute_dtype(model))
            else:
                state.bank, state.kv = {}, {}  # filled by the first UNet call of this step
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
                              attn1=_attn1_modules(dm), on_window=on_window)
    if appearance is not None:
        # Chained into replaces other nodes put on these blocks (SAG, PAG), see attention_chain.
        install_reference_attention(m, _reference_replace(state), list(REFERENCE_BLOCKS), KEY + "_attention")
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
    _estimate_window_memory(m, appearance, pose, state.segments)
    return m, state


def _estimate_window_memory(m: comfy.model_patcher.ModelPatcher, appearance: Appearance | None,
                            pose: PoseCondition | None, segments: SegmentOptions) -> None:
    """ComfyUI's estimate for ``m`` covers the reference tokens, the residual cache and the two extra networks."""
    changes: dict = {"reference_images": 0, "control": False, "held_frames": 0}
    if appearance is not None:
        enc = appearance.encoder.patcher.model
        changes.update(reference_images=int(appearance.latent.shape[0]),
                       encoder_dtype_bytes=(enc.manual_cast_dtype or enc.get_dtype()).itemsize)
    if pose is not None:
        cn = pose.control_net
        # The closed loop's last window reuses the first frames: their residuals are kept from the first window on.
        changes.update(control=True, control_dtype_bytes=(cn.manual_cast_dtype or cn.control_model.dtype).itemsize,
                       held_frames=segments.overlap if segments.closed_loop else 0)
    update_memory_estimate(m, **changes)
