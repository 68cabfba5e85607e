"""The oracle scheduler (DDIM), context windows and one denoising step."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .unet import OracleUNet3D

# ---------------------------------------------------------------------------------------------------------------------
# Scheduler and context windows
# ---------------------------------------------------------------------------------------------------------------------


def oracle_alphas_cumprod(num_train_timesteps: int = 1000) -> Tensor:
    """Linear betas ``linspace(0.00085, 0.012, 1000)`` in fp32; returns ``cumprod(1 - beta)`` (1000,) fp32."""
    betas = torch.linspace(0.00085, 0.012, num_train_timesteps, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


def oracle_timesteps(steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """DDIM "leading" spacing with steps_offset 1: ``ratio = 1000 // steps``, ``t_i = (steps-1-i) * ratio + 1``."""
    ratio = num_train_timesteps // steps
    return [k * ratio + 1 for k in reversed(range(steps))]


def oracle_ddim_update(x_t: Tensor, eps: Tensor, t: int, alphas_cumprod: Tensor, step_ratio: int) -> Tensor:
    """DDIM eta = 0: ``x0 = (x_t - sqrt(1-a_t) eps) / sqrt(a_t)``, ``x_prev = sqrt(a_prev) x0 +
    sqrt(1-a_prev) eps`` with ``a_prev = alphas_cumprod[t - step_ratio]`` or 1.0 when that index is negative."""
    a_t = alphas_cumprod[t]
    a_prev = alphas_cumprod[t - step_ratio] if t - step_ratio >= 0 else torch.tensor(1.0, dtype=alphas_cumprod.dtype)
    x0 = (x_t - (1 - a_t) ** 0.5 * eps) / a_t**0.5
    return a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps


def _bit_reversed_fraction(step: int) -> float:
    """h(s): the 64-bit bit-reversal of s, divided by 2^64 (h(0) = 0)."""
    bits = format(step, "064b")
    return int(bits[::-1], 2) / 2**64


def oracle_windows(
    num_frames: int,
    size: int = 16,
    overlap: int = 4,
    closed_loop: bool = True,
    step: int = 0,
    stride: int = 1,
) -> list[list[int]]:
    """The "uniform" context scheduler, written from its text.

    Returns the windows, each a list of ``size`` frame indices (or all frames if ``num_frames <= size``).
    Dilations: the description says "d in {1, 2, 4, ...} below the capped stride". Read literally (d < capped) that
    would give no window at all for the capped stride 1 the pipeline uses, so it is read as ``d = 2^e`` for
    ``e = 0 .. capped - 1`` (the AnimateDiff-style reading). Both readings agree whenever only d = 1 is produced.
    """
    if num_frames <= size:
        return [list(range(num_frames))]
    capped = min(stride, math.ceil(math.log2(num_frames / size)) + 1)
    h = _bit_reversed_fraction(step)
    windows = []
    for e in range(capped):
        d = 2**e
        pad = round(num_frames * h)
        end = num_frames + pad + (0 if closed_loop else -overlap)
        j = math.floor(h * d) + pad
        while j < end:
            windows.append([(j + k * d) % num_frames for k in range(size)])
            j += size * d - overlap
    return windows


# ---------------------------------------------------------------------------------------------------------------------
# One denoising step
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def oracle_controlnet_residuals(
    controlnet: nn.Module,
    control_frames: Tensor,
    x_t: Tensor,
    t: int,
    text_cond: Tensor,
    conditioning_scale: float = 1.0,
    chunk: int = 16,
) -> tuple[list[Tensor], Tensor]:
    """Run the diffusers ``ControlNetModel`` once per frame (batched in chunks), cond text only.

    control_frames (F, 3, 8h, 8w) in [0, 1] RGB; x_t (1, 4, F, h, w); text_cond (1, 77, ctx).
    Returns (12 tensors (F, C_i, h_i, w_i), mid (F, C_mid, h/8, w/8)), already multiplied by the scale.
    """
    frames = x_t[0].permute(1, 0, 2, 3)  # (F, 4, h, w)
    num_frames = frames.shape[0]
    downs: list[list[Tensor]] = []
    mids: list[Tensor] = []
    for start in range(0, num_frames, chunk):
        x = frames[start : start + chunk]
        n = x.shape[0]
        down, mid = controlnet(
            x,
            torch.as_tensor(t),
            encoder_hidden_states=text_cond.expand(n, -1, -1),
            controlnet_cond=control_frames[start : start + chunk],
            conditioning_scale=conditioning_scale,
            return_dict=False,
        )
        downs.append(list(down))
        mids.append(mid)
    down_res = [torch.cat([d[i] for d in downs], dim=0) for i in range(len(downs[0]))]
    return down_res, torch.cat(mids, dim=0)


def _gather_window(per_frame_tensor: Tensor, window: Sequence[int], batch: int) -> Tensor:
    """(F, C, h, w) per-frame cache -> (batch, C, len(window), h, w), same values in every batch row."""
    picked = per_frame_tensor[list(window)]  # (f, C, h, w)
    return picked.permute(1, 0, 2, 3)[None].expand(batch, -1, -1, -1, -1)


@torch.no_grad()
def oracle_guided_eps(
    unet: OracleUNet3D,
    appearance_bank: dict[int, Tensor] | None,
    controlnet: nn.Module | None,
    control_frames: Tensor | None,
    x_t: Tensor,
    t: int,
    text_cond: Tensor,
    text_uncond: Tensor,
    guidance_scale: float = 7.5,
    windows: Sequence[Sequence[int]] | None = None,
    conditioning_scale: float = 1.0,
) -> Tensor:
    """ControlNet per frame, denoiser per window on [uncond, cond], per-frame average, CFG.

    x_t (1, 4, F, h, w); control_frames (F, 3, 8h, 8w) (ignored if ``controlnet`` is None); text_* (1, 77, ctx);
    appearance_bank {k: (N_k, C_k)} used for the cond half only (uncond = plain self-attention).
    ``guidance_scale == 1`` runs the cond half only (mathematically the same value).
    Returns the guided noise estimate (1, 4, F, h, w).
    """
    num_frames = x_t.shape[2]
    if windows is None:
        windows = oracle_windows(num_frames, 16, 4, closed_loop=True)
    if controlnet is not None:
        assert control_frames is not None
        cn_down, cn_mid = oracle_controlnet_residuals(controlnet, control_frames, x_t, t, text_cond, conditioning_scale)
    use_cfg = guidance_scale != 1.0
    if use_cfg:
        text = torch.cat([text_uncond, text_cond], dim=0)
        ref_rows = torch.tensor([False, True])
    else:
        text = text_cond
        ref_rows = torch.tensor([True])
    batch = text.shape[0]

    acc = torch.zeros(batch, *x_t.shape[1:], dtype=x_t.dtype)
    count = torch.zeros(num_frames, dtype=x_t.dtype)
    for window in windows:
        idx = torch.tensor(list(window))
        x_w = x_t[:, :, idx].expand(batch, -1, -1, -1, -1)
        down_res = mid_res = None
        if controlnet is not None:
            down_res = [_gather_window(r, window, batch) for r in cn_down]  # shared by both halves
            mid_res = _gather_window(cn_mid, window, batch)
        eps_w = unet(x_w, t, text, down_res, mid_res, appearance_bank, ref_rows if appearance_bank else None)
        acc.index_add_(2, idx, eps_w)
        count.index_add_(0, idx, torch.ones(len(idx), dtype=x_t.dtype))
    if (count == 0).any():
        raise ValueError("some frames are not covered by any window")
    eps = acc / count[None, None, :, None, None]
    if not use_cfg:
        return eps
    eps_uncond, eps_cond = eps[0:1], eps[1:2]
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


@torch.no_grad()
def oracle_step(
    unet: OracleUNet3D,
    appearance_bank: dict[int, Tensor] | None,
    controlnet: nn.Module | None,
    control_frames: Tensor | None,
    x_t: Tensor,
    t: int,
    alphas_cumprod: Tensor,
    text_cond: Tensor,
    text_uncond: Tensor,
    guidance_scale: float = 7.5,
    windows: Sequence[Sequence[int]] | None = None,
    step_ratio: int = 40,
    conditioning_scale: float = 1.0,
) -> Tensor:
    """ONE denoising step (items 3-7), all in fp32.

    Args:
        unet: the oracle denoiser.
        appearance_bank: {k: (N_k, C_k)} from :class:`OracleAppearanceEncoder` at this t (None: no reference).
        controlnet: diffusers ``ControlNetModel`` (None: no ControlNet residuals).
        control_frames: (F, 3, 8h, 8w) RGB in [0, 1].
        x_t: (1, 4, F, h, w) current latents.
        t: integer timestep.
        alphas_cumprod: (1000,) table (:func:`oracle_alphas_cumprod`).
        text_cond / text_uncond: (1, 77, ctx).
        guidance_scale: CFG scale (7.5 in the reference).
        windows: denoiser windows (default: :func:`oracle_windows` (F, 16, 4), closed loop).
        step_ratio: ``1000 // steps`` (40 for 25 steps); ``t_prev = t - step_ratio``.
        conditioning_scale: ControlNet residual scale (1.0).
    Returns:
        x_{t-step_ratio}: (1, 4, F, h, w).
    """
    eps = oracle_guided_eps(
        unet,
        appearance_bank,
        controlnet,
        control_frames,
        x_t,
        t,
        text_cond,
        text_uncond,
        guidance_scale,
        windows,
        conditioning_scale,
    )
    return oracle_ddim_update(x_t, eps, t, alphas_cumprod, step_ratio)
