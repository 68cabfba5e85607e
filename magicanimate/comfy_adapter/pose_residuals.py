"""DensePose ControlNet conditioning: residuals computed once per frame per step and shared by every window.

The ControlNet runs on each frame's own noisy latent with the conditional text context, once per frame per model
evaluation, and its residuals are shared by both CFG halves and by every window holding the frame (core ComfyUI
would feed every window the first frames' hints; docs/ARCHITECTURE.md, "ControlNets applied through core nodes").
Frames are dropped from the cache once no later window needs them, so memory does not grow with video length.

The ControlNet runs in eager code, once per window outside ``diffusion_model``; the compiled forward only reads the
window's ready residuals. Timesteps reach it in float32, as they reach the UNet (a bf16 961 would be 960).
"""

from __future__ import annotations

import torch

from ..frame_cache import FrameCache
from ..pose_frames import StreamedHints, hint_layout
from .conditioning_state import ConditioningState
from .dtypes import compute_dtype

__all__ = ["prepare_hints", "begin_step", "residuals_for_window", "residuals_for_batch", "release_window",
           "merge_control"]


def prepare_hints(frames: torch.Tensor, num_frames: int, height: int, width: int) -> torch.Tensor:
    """Pose frames ``(T, H, W, 3)`` -> hints ``(num_frames, 3, height, width)`` float32 on the CPU.

    Frames are edge-padded with the last frame (docs/ARCHITECTURE.md, "Padding, cropping and windows") or cut to
    ``num_frames``, and resized with antialiased bicubic filtering when their size differs (callers fit them
    beforehand for the reference's exact pixels).
    """
    hints = hint_layout(frames)
    t = hints.shape[0]
    if t < num_frames:
        hints = torch.cat([hints, hints[-1:].expand(num_frames - t, -1, -1, -1)], dim=0)
    hints = hints[:num_frames]
    if hints.shape[-2:] != (height, width):
        hints = torch.nn.functional.interpolate(hints, size=(height, width), mode="bicubic", antialias=True,
                                                align_corners=False).clamp(0, 1)
    return hints.contiguous()


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


def begin_step(state: ConditioningState, x: torch.Tensor, sigma: torch.Tensor) -> None:
    """A new model evaluation of the video ``x`` ``(F, 4, h, w)`` at ``sigma`` ``(1,)``: hints for this video size,
    an empty residual cache that counts this evaluation's windows, and whether the ControlNet is on at this sigma.

    IMAGE pose frames become all hints at once (pinned on CUDA); pose frames from a frame source become
    :class:`StreamedHints`, made a chunk at a time as windows ask for them (flat memory in the video length)."""
    num_frames = x.shape[0]
    size = (x.shape[-2] * 8, x.shape[-1] * 8)
    if state.hints is None or state.hints.shape[0] != num_frames or tuple(state.hints.shape[-2:]) != size:
        dtype = compute_dtype(state.pose.control_net)
        if isinstance(state.hints, StreamedHints):
            state.hints.close()
        if not isinstance(state.pose.frames, torch.Tensor):
            state.hints = StreamedHints(state.pose.frames, num_frames, *size, fit=state.pose.fit, dtype=dtype)
        else:
            hints = prepare_hints(state.pose.frames, num_frames, *size).to(dtype)
            state.hints = hints.pin_memory() if x.device.type == "cuda" and torch.cuda.is_available() else hints
    # One window of all frames when the video fits in a segment (as the context handler does).
    state.control_cache = FrameCache(state.segments.windows(num_frames), num_frames)
    hi, lo = state.sigma_range
    state.step_sigma = float(sigma[0])  # the one host-device synchronisation per step
    state.control_active = lo <= state.step_sigma <= hi


def residuals_for_window(state: ConditioningState, model: torch.nn.Module, x: torch.Tensor, sigmas: torch.Tensor,
                         frame_ids: list[int], context: torch.Tensor | None = None) -> dict | None:
    """The window's per-frame residuals ``{"output": [[(1, C, h, w)] * f per level], "middle": [...]}`` (compute
    dtype, scaled by the strength), or ``None`` while the ControlNet is off.

    ``model``: the denoiser's ``BaseModel``; ``x``: the window's noisy latents ``(f, 4, h, w)`` in sigma space;
    ``sigmas`` ``(f,)``; ``context``: text ``(1, 77, C)``, used when the run has no positive context of its own.
    Frames not yet in the per-frame cache go through the ControlNet in one batch; all others are reused.
    """
    if not state.control_active:
        return None
    pose = state.pose
    cn = pose.control_net
    todo = [j for j, i in enumerate(frame_ids) if i not in state.control_cache]
    out_dtype = compute_dtype(model)
    if todo:
        if state.hints is None or state.hints.shape[0] < max(frame_ids) + 1:
            raise RuntimeError("pose hints were not prepared for this video length")
        dtype = compute_dtype(cn)
        ids = [frame_ids[j] for j in todo]
        rows = state.hints.take(ids) if isinstance(state.hints, StreamedHints) else _take(state.hints, _runs(ids))
        hint = rows.to(device=x.device, dtype=dtype, non_blocking=True)
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


def residuals_for_batch(state: ConditioningState, chunks: int) -> dict | None:
    """The current window's residuals ``(chunks*f, C, h, w)`` per level for a batch of ``chunks`` cond/uncond chunks:
    one concatenation of the cached frames (no per-window copy held besides the one the UNet pops level by level)."""
    if state.window_control is None:
        return None
    return {name: [parts[0] if len(parts) * chunks == 1 else torch.cat(parts * chunks, dim=0) for parts in levels]
            for name, levels in state.window_control.items()}


def release_window(state: ConditioningState, frame_ids: list[int]) -> None:
    """Forget the residuals of frames no later window of this evaluation needs (flat memory in video length).

    Called once per window, after both CFG halves ran (ComfyUI may run them in separate calls when memory is short).
    """
    state.window_control = None
    state.control_cache.window_done(frame_ids)


def merge_control(ours: dict | None, theirs: dict | None) -> dict | None:
    """Sum our residuals with those of ControlNets applied through core nodes (fresh lists: UNet pops them).

    Both are ``{"input"|"middle"|"output": [(B, C, h, w) or None per level]}``.
    """
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
