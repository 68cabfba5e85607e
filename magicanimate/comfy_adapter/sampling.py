"""Sampling a MagicAnimate video with ComfyUI's own guider, samplers and progress reporting.

The default "reference DDIM" is ComfyUI's Euler sampler in sigma space (what its ``ddim`` sampler runs) walking the
reference's exact timesteps 961, 921, ..., 1 (any step count), starting from noise scaled so it equals the
reference's ``x_T`` (docs/ARCHITECTURE.md, "Schedule, timesteps and noise scaling"). Any other ComfyUI
sampler/scheduler pair can be chosen instead.
"""

from __future__ import annotations

from collections.abc import Callable

import comfy.model_patcher
import comfy.samplers
import comfy.utils
import torch

from ..errors import MagicAnimateError
from ..noise import video_noise
from ..schedule import ddim_sigmas, pure_noise_scale

__all__ = ["REFERENCE_SAMPLER", "sampler_names", "video_sigmas", "initial_noise", "sample_video",
           "NonFiniteLatentError", "sampler_seed"]

REFERENCE_SAMPLER = "reference_ddim"


def sampler_names() -> list[str]:
    return [REFERENCE_SAMPLER] + list(comfy.samplers.KSampler.SAMPLERS)


def video_sigmas(model: comfy.model_patcher.ModelPatcher, sampler_name: str, scheduler: str, steps: int,
                 denoise: float) -> torch.Tensor:
    """Sigma table ``(n + 1,)`` for the chosen sampler; the reference DDIM ignores ``scheduler``."""
    ms = model.get_model_object("model_sampling")
    if sampler_name == REFERENCE_SAMPLER:
        return ddim_sigmas(steps, ms.sigmas, denoise)
    ks = comfy.samplers.KSampler(model, steps=steps, device="cpu", sampler=sampler_name, scheduler=scheduler,
                                 denoise=denoise)
    return ks.sigmas.cpu()


def initial_noise(seed: int, latent: torch.Tensor, mode: str, period: int = 16) -> torch.Tensor:
    """Noise ``(F, C, h, w)`` for a latent video ``(F, C, h, w)``: a tiled ``period``-frame clip or per frame."""
    f, c, h, w = latent.shape
    return video_noise(seed, f, c, h, w, mode=mode, period=period)


def sample_video(model: comfy.model_patcher.ModelPatcher, positive: list, negative: list, latent: torch.Tensor,
                 noise: torch.Tensor, seed: int, steps: int, cfg: float, sampler_name: str = REFERENCE_SAMPLER,
                 scheduler: str = "normal", denoise: float = 1.0, callback: Callable | None = None,
                 disable_pbar: bool = True, sigmas: torch.Tensor | None = None,
                 noise_is_scratch: bool = False) -> torch.Tensor:
    """Denoise a latent video ``(F, 4, h, w)`` (unscaled VAE space) and return it in the same space.

    ``noise`` is standard normal ``(F, 4, h, w)``. With the reference DDIM and an all-zero latent the noise is
    rescaled so the first model input equals the reference's ``x_T = noise``; ``noise_is_scratch``: the caller no
    longer needs ``noise``, so that rescaling overwrites it instead of holding a second copy for the whole run.
    ``latent`` may be an expanded view (an all-zero start costs no memory per frame). ``sigmas`` overrides the
    schedule.
    """
    if sigmas is None:
        sigmas = video_sigmas(model, sampler_name, scheduler, steps, denoise)
    if len(sigmas) < 2:
        return latent
    if sampler_name == REFERENCE_SAMPLER:
        # Core's "ddim" is this same Euler sampler plus a random inpainting noise (a full video-sized buffer drawn
        # at every run) that is read only under a denoise mask, which this call never passes: same steps, one
        # latent-sized buffer less (docs/ARCHITECTURE.md, "What grows with the number of frames").
        sampler = comfy.samplers.ksampler("euler")
        if not torch.count_nonzero(latent):
            scale = pure_noise_scale(float(sigmas[0]))
            noise = noise.mul_(scale) if noise_is_scratch else noise * scale
    else:
        sampler = comfy.samplers.sampler_object(sampler_name)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    total = len(sigmas) - 1

    def checked(step: int, x0: torch.Tensor, x: torch.Tensor, total_steps: int) -> None:
        # One reduction and one host sync per step: a NaN/Inf stops the run here, not as a black video at the end.
        if not bool(torch.isfinite(x0).all()):
            raise NonFiniteLatentError(step + 1, total_steps)
        if callback is not None:
            callback(step, x0, x, total_steps)

    out = guider.sample(noise, latent, sampler, sigmas, callback=checked, disable_pbar=disable_pbar,
                        seed=sampler_seed(seed))
    if not bool(torch.isfinite(out).all()):
        raise NonFiniteLatentError(total, total)
    return out


def sampler_seed(seed: int) -> int:
    """The seed handed to ComfyUI's sampler (the per-step noise of ancestral and SDE samplers): ``seed`` mod 2**63.

    The widget allows 0..2**64-1, but newer cores add 1 to the seed on the CPU before ``Generator.manual_seed``, which
    overflows at 2**64 - 1. Seeds below 2**63 are passed as they are; the initial noise always uses the full seed.
    """
    return int(seed) % (1 << 63)


class NonFiniteLatentError(MagicAnimateError):
    """The denoised video became NaN/Inf at a sampling step (the message names the step and the likely causes)."""

    def __init__(self, step: int, total: int) -> None:
        self.step = step
        super().__init__(
            f"TemporalSample: the video latent became NaN/Inf at step {step} of {total}, so the result would be a "
            "black video; the run was stopped. Likely causes: half precision overflowing on this device (set "
            "weight_dtype to bf16 or fp32 in Load MagicAnimate), an extreme cfg, or NaN/Inf in an input (the "
            "reference image, the pose frames, the latent, or a model's weights). Check those and run again.")
