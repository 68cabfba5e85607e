"""ComfyUI's memory estimate for the MagicAnimate MODEL (magicanimate/window_device_memory.py,
comfy_adapter/memory_required.py): the shape-derived widths match the real networks, and the estimate answers only
inside the ComfyUI calls it wraps."""

from __future__ import annotations

import pytest
import torch
from comfy.patcher_extension import WrappersMP

from devtools.random_weights.model_files import TINY
from magicanimate.comfy_adapter.appearance import run_encoder
from magicanimate.comfy_adapter.conditioning import apply_conditioning
from magicanimate.comfy_adapter.context import SegmentOptions
from magicanimate.comfy_adapter.keys import WINDOW_MEMORY as OPTION
from magicanimate.comfy_adapter.payloads import Appearance, PoseCondition
from magicanimate.window_device_memory import REFERENCE_WIDTHS, RESIDUAL_WIDTHS, WindowMemory, window_memory_bytes

H = W = 8  # latent size


def conditioned(tiny_models, k: int = 2):
    temporal, encoder, control = tiny_models
    poses = torch.rand(16, 8 * H, 8 * W, 3)
    return apply_conditioning(temporal.model, Appearance(encoder, torch.randn(k, 4, H, W)),
                              PoseCondition(control, poses), SegmentOptions())


@torch.no_grad()
def test_residual_and_reference_widths_are_the_networks_real_sizes(tiny_models):
    _, _, control = tiny_models
    m, state = conditioned(tiny_models, k=2)
    c0 = m.model.diffusion_model.model_channels
    cn = control.control_model
    out = cn(x=torch.randn(1, 4, H, W), hint=torch.rand(1, 3, 8 * H, 8 * W), timesteps=torch.tensor([500.0]),
             context=torch.randn(1, 77, TINY["cross_attention_dim"]))
    values = sum(t.numel() for name in ("output", "middle") for t in out[name])
    assert values == RESIDUAL_WIDTHS * c0 * H * W
    run_encoder(state, torch.tensor([500.0]), torch.randn(1, 77, TINY["cross_attention_dim"]))
    assert sum(t.numel() for t in state.bank.values()) == 2 * REFERENCE_WIDTHS * c0 * H * W


def test_estimate_answers_inside_the_wrapped_calls_only(tiny_models):
    temporal, _, _ = tiny_models
    m, _ = conditioned(tiny_models, k=2)
    base = m.model
    assert base is temporal.model.model and "memory_required" not in vars(base)  # shared with the plain MODEL
    sd15 = base.memory_required([32, 4, H, W])
    spec = WindowMemory(model_channels=32, dtype_bytes=4, reference_images=2, encoder_dtype_bytes=4, control=True,
                        control_dtype_bytes=4, held_frames=4)
    seen = {}

    def prepare_executor(model, noise_shape, conds, model_options=None):
        # what comfy.sampler_helpers.estimate_memory asks, after the context-window wrapper cut the batch to 16
        seen["prepare"] = (model.model.memory_required([2 * 16, 4, H, W]), model.model.memory_required([16, 4, H, W]))
        raise RuntimeError("loading failed")

    (prepare,) = m.get_wrappers(WrappersMP.PREPARE_SAMPLING, OPTION)
    with pytest.raises(RuntimeError):
        prepare(prepare_executor, m, [48, 4, H, W], {}, model_options=m.model_options)
    assert seen["prepare"] == (window_memory_bytes(spec, 16, 2, H, W), window_memory_bytes(spec, 16, 1, H, W))
    assert seen["prepare"][0] != sd15
    assert "memory_required" not in vars(base) and base.memory_required([32, 4, H, W]) == sd15

    def calc_executor(model, conds, x_in, timestep, model_options):
        # what comfy.samplers._calc_cond_batch asks for both CFG halves of this 12-frame window at once
        return model.memory_required([2 * x_in.shape[0], 4, H, W])

    (calc,) = m.get_wrappers(WrappersMP.CALC_COND_BATCH, OPTION)
    got = calc(calc_executor, base, [], torch.zeros(12, 4, H, W), torch.ones(12), m.model_options)
    assert got == window_memory_bytes(spec, 12, 2, H, W)
    assert "memory_required" not in vars(base)
    # The temporal MODEL alone: its activations, no reference tokens or residuals.
    plain = temporal.model.model_options[OPTION]
    assert plain.reference_images == 0 and not plain.control and plain.model_channels == 32


def test_estimate_grows_with_the_window_batch_and_each_extra_input():
    base = WindowMemory(model_channels=320, dtype_bytes=2)
    one = window_memory_bytes(base, 16, 1, 64, 64)
    assert window_memory_bytes(base, 16, 2, 64, 64) == 2 * one          # batch-linear UNet activations
    assert window_memory_bytes(base, 16, 1, 32, 32) * 4 == one          # and linear in latent pixels
    with_ref = WindowMemory(model_channels=320, dtype_bytes=2, reference_images=4)
    with_control = WindowMemory(model_channels=320, dtype_bytes=2, control=True, held_frames=4)
    assert window_memory_bytes(with_ref, 16, 1, 64, 64) > one
    assert window_memory_bytes(with_control, 16, 1, 64, 64) > one
