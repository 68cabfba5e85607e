"""Half precision on tiny weights: fp16 and bf16 weights computed in that dtype (as on a GPU), and ComfyUI's
manual-cast path (half weights, float32 compute, as on this CPU), against the float32 run of the same files.

One reference-DDIM step with every part active (reference attention, ControlNet, motion modules, windows, CFG). The
tolerances are relative to the largest output value and were set at about 3x what was measured.
"""

from __future__ import annotations

import comfy.model_management
import pytest
import torch

from devtools.random_weights.model_files import TINY
from magicanimate.comfy_adapter.conditioning import apply_conditioning
from magicanimate.comfy_adapter.context import SegmentOptions
from magicanimate.comfy_adapter.loaders import load_appearance_encoder, load_densepose_controlnet, load_temporal_model
from magicanimate.comfy_adapter.payloads import Appearance, PoseCondition
from magicanimate.comfy_adapter.sampling import sample_video
from magicanimate.schedule import ddim_sigmas

H = W = 8
FRAMES = 12


def _load(files, dtype, manual_cast: bool, monkeypatch):
    if not manual_cast:  # compute in the weight dtype, as ComfyUI does on a GPU that supports it
        monkeypatch.setattr(comfy.model_management, "unet_manual_cast", lambda *a, **k: None)
    models = (load_temporal_model(str(files.temporal), dtype), load_appearance_encoder(str(files.appearance), dtype),
              load_densepose_controlnet(str(files.controlnet), dtype))
    monkeypatch.undo()
    return models


def _step(models, record=None):
    temporal, encoder, control = models
    torch.manual_seed(7)
    poses = torch.rand(FRAMES, H * 8, W * 8, 3)
    ref = torch.randn(1, 4, H, W)
    text = [[torch.randn(1, 77, TINY["cross_attention_dim"]), {}]]
    neg = [[torch.randn(1, 77, TINY["cross_attention_dim"]), {}]]
    noise = torch.randn(FRAMES, 4, H, W)
    m, _ = apply_conditioning(temporal.model, Appearance(encoder, ref), PoseCondition(control, poses),
                              SegmentOptions(8, 2))
    hook = None
    if record is not None:
        hook = control.control_model.register_forward_pre_hook(
            lambda mod, args, kwargs: record.append(kwargs["timesteps"]), with_kwargs=True)
    try:
        return sample_video(m, text, neg, torch.zeros(FRAMES, 4, H, W), noise, 0, 25, 7.5,
                            sigmas=ddim_sigmas(25)[:2])
    finally:
        if hook is not None:
            hook.remove()


@pytest.fixture(scope="module")
def float32_step(tiny_models):
    with torch.no_grad():
        return _step(tiny_models)


@pytest.mark.slow
@pytest.mark.parametrize("dtype,manual_cast,tol", [(torch.float16, False, 1e-2), (torch.bfloat16, False, 6e-2),
                                                   (torch.float16, True, 3e-3), (torch.bfloat16, True, 2e-2)])
@torch.no_grad()
def test_half_precision_step_agrees_with_float32(tiny_files, float32_step, monkeypatch, dtype, manual_cast, tol):
    expect = float32_step
    models = _load(tiny_files, dtype, manual_cast, monkeypatch)
    unet = models[0].model.model
    assert unet.get_dtype() == dtype and (unet.manual_cast_dtype is None) != manual_cast
    timesteps = []
    got = _step(models, timesteps)
    err = ((got - expect).abs().max() / expect.abs().max()).item()
    print(f"{dtype} manual_cast={manual_cast}: relative max error {err:.2e}")
    assert torch.isfinite(got).all() and err <= tol, err
    # The ControlNet sees the UNet's float32 timestep 961, not a bf16-rounded 960.
    assert timesteps and all(t.dtype == torch.float32 and torch.all(t == 961) for t in timesteps)
