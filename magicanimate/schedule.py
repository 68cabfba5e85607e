"""The MagicAnimate noise schedule and DDIM timesteps (docs/ARCHITECTURE.md, "Schedule, timesteps and noise scaling").

MagicAnimate uses diffusers' ``DDIMScheduler(beta_schedule="linear")``: betas linear in beta (ComfyUI calls this
``sqrt_linear``), *not* SD1.5's scaled-linear table. Timesteps use "leading" spacing with ``steps_offset=1``.
DDIM with eta 0 is Euler in (sigma, x / sqrt(alpha_bar)) coordinates, so the whole schedule can be expressed as a sigma
table that ComfyUI's samplers walk.
"""

from __future__ import annotations

import math

import torch

BETA_START = 0.00085
BETA_END = 0.012
NUM_TRAIN_TIMESTEPS = 1000
#: ComfyUI's name for diffusers' "linear" beta schedule.
COMFY_BETA_SCHEDULE = "sqrt_linear"


def linear_betas(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = BETA_START,
                 beta_end: float = BETA_END) -> torch.Tensor:
    """Betas ``linspace(beta_start, beta_end, T)`` in float64, shape ``(T,)``."""
    return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)


def alphas_cumprod(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """``alpha_bar_t = prod_{j<=t} (1 - beta_j)`` in float64, shape ``(T,)``."""
    return torch.cumprod(1.0 - linear_betas(num_train_timesteps), dim=0)


def ddim_timesteps(steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, steps_offset: int = 1) -> list[int]:
    """Descending DDIM timesteps with leading spacing and ``steps_offset``.

    ``ddim_timesteps(25) == [961, 921, ..., 41, 1]``. Works for any step count from 1 to ``num_train_timesteps``
    (ComfyUI's ``ddim_uniform`` only matches for divisors of 1000).
    """
    if not 1 <= int(steps) <= num_train_timesteps:
        raise ValueError(f"steps must be between 1 and {num_train_timesteps}, got {steps}")
    ratio = num_train_timesteps // int(steps)
    return [i * ratio + steps_offset for i in reversed(range(int(steps)))]


def sigma_from_alpha_bar(alpha_bar: torch.Tensor) -> torch.Tensor:
    """``sigma = sqrt((1 - alpha_bar) / alpha_bar)``."""
    return ((1.0 - alpha_bar) / alpha_bar).sqrt()


def ddim_sigmas(steps: int, model_sigmas: torch.Tensor | None = None, denoise: float = 1.0) -> torch.Tensor:
    """Sigma table for ``steps`` reference DDIM steps, shape ``(steps' + 1,)`` float32, ending in 0.

    ``model_sigmas`` is the model's per-timestep sigma table (``model_sampling.sigmas``, shape ``(1000,)``); by default
    the MagicAnimate linear-beta table. The final 0 makes the last step return x0 exactly, like diffusers'
    ``set_alpha_to_one=True``. ``denoise < 1`` keeps the last ``round(steps * denoise)`` steps of the full schedule
    (img2img-style partial denoising, as ComfyUI's KSampler does).
    """
    if model_sigmas is None:
        model_sigmas = sigma_from_alpha_bar(alphas_cumprod())
    ts = ddim_timesteps(steps, num_train_timesteps=len(model_sigmas))
    sig = model_sigmas.to(torch.float32)[torch.tensor(ts, dtype=torch.long)]
    sig = torch.cat([sig, sig.new_zeros(1)])
    if denoise < 1.0:
        keep = int(round(steps * max(0.0, float(denoise))))
        sig = sig[len(sig) - 1 - keep:]
    return sig


def pure_noise_scale(sigma0: float) -> float:
    """Factor that turns ComfyUI's start ``noise * sigma0`` into diffusers' ``x_T = noise``.

    ComfyUI samples in x / sqrt(alpha_bar) coordinates and starts from ``noise * sigma0``; the reference starts from
    ``x_T = noise``, i.e. ``noise / sqrt(alpha_bar) = noise * sqrt(1 + sigma0^2)`` in those coordinates. Multiply
    the noise by this factor for a pure-noise start.
    """
    s = float(sigma0)
    if s <= 0:
        return 1.0
    return math.sqrt(1.0 + s * s) / s
