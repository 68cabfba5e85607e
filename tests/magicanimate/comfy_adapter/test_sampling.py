"""The reference DDIM through ComfyUI's sampler visits exactly the reference timesteps."""

from __future__ import annotations

import pytest
import torch
from comfy.patcher_extension import WrappersMP

from magicanimate.comfy_adapter.sampling import REFERENCE_SAMPLER, sample_video, video_sigmas
from magicanimate.schedule import ddim_timesteps


@pytest.mark.parametrize("steps", [25, 30])
def test_sampler_visits_reference_timesteps(tiny_models, steps):
    temporal, _, _ = tiny_models
    model = temporal.model.clone()
    seen = []

    def record(executor, x, timesteps, *args, **kwargs):
        seen.append(round(float(timesteps[0])))
        return executor(x, timesteps, *args, **kwargs)

    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "record", record)
    latent = torch.zeros(2, 4, 8, 8)
    ctx = [[torch.zeros(1, 77, 32), {}]]
    sample_video(model, ctx, ctx, latent, torch.randn_like(latent), 0, steps, 1.0)
    assert seen == ddim_timesteps(steps)           # 961, 921, ..., 1 for 25; 30 steps -> 30 (ddim_uniform: 31)
    sig = video_sigmas(model, REFERENCE_SAMPLER, "normal", steps, 1.0)
    ms = model.get_model_object("model_sampling")
    assert torch.allclose(sig[:-1], ms.sigmas[torch.tensor(ddim_timesteps(steps))].float())
    assert ms.sigmas[0].item() == pytest.approx((0.00085 / (1 - 0.00085)) ** 0.5, rel=1e-5)  # linear-beta table
