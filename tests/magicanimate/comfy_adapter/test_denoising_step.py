"""The patched ComfyUI model against the independent oracle (devtools/oracle), on tiny random weights.

These are the faithfulness tests: the same files are loaded by the project's loaders into ComfyUI's own UNet,
ControlNet and sampler, and by the oracle into plainly written modules; outputs must agree to fp32 rounding.
"""

from __future__ import annotations

import comfy.model_management
import pytest
import torch
from comfy.patcher_extension import WrappersMP

from devtools.oracle import oracle_alphas_cumprod, oracle_step, oracle_windows
from devtools.random_weights.model_files import (
    TINY,
    load_oracle_appearance_encoder,
    load_oracle_controlnet,
    load_oracle_unet,
)
from magicanimate.comfy_adapter.conditioning import apply_conditioning
from magicanimate.comfy_adapter.context import SegmentOptions
from magicanimate.comfy_adapter.payloads import Appearance, PoseCondition
from magicanimate.comfy_adapter.sampling import sample_video
from magicanimate.schedule import alphas_cumprod, ddim_sigmas

SCALE = 0.18215
H = W = 8  # latent size; 64x64 pixels


def comfy_unet_call(model, x, t, context, cond_or_uncond, control=None):
    """Call ComfyUI's diffusion model with the patcher's wrappers and patches, as _calc_cond_batch would."""
    comfy.model_management.load_models_gpu([model])
    opts = dict(model.model_options.get("transformer_options", {}))
    opts["wrappers"] = {WrappersMP.DIFFUSION_MODEL: model.wrappers.get(WrappersMP.DIFFUSION_MODEL, {})}
    opts["cond_or_uncond"] = cond_or_uncond
    opts["sigmas"] = torch.ones(x.shape[0])
    dm = model.model.diffusion_model
    return dm(x, t, context=context, control=control, transformer_options=opts)


def to_frames(v):  # (b, C, f, h, w) -> (b*f, C, h, w)
    b, c, f, h, w = v.shape
    return v.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


@torch.no_grad()
def test_temporal_unet_equals_oracle_3d_unet(tiny_files, tiny_models):
    temporal, _, _ = tiny_models
    oracle = load_oracle_unet(tiny_files.temporal_sd, TINY)
    torch.manual_seed(1)
    f = 12
    x = torch.randn(2, 4, f, H, W)
    text = torch.randn(2, 77, TINY["cross_attention_dim"])
    expect = oracle(x, 500, text)
    # ComfyUI batch: chunk 0 = uncond (cond_or_uncond 1), chunk 1 = cond (0); frames batch-major.
    ctx = text.repeat_interleave(f, dim=0)
    got = comfy_unet_call(temporal.model, to_frames(x), torch.full((2 * f,), 500.0), ctx, [1, 0])
    torch.testing.assert_close(got, to_frames(expect), atol=2e-4, rtol=1e-4)


@torch.no_grad()
def test_joint_groupnorm_couples_frames_and_motion_modules_are_active(tiny_models):
    temporal, _, _ = tiny_models
    torch.manual_seed(2)
    f = 16
    x = torch.randn(f, 4, H, W)
    ctx = torch.randn(1, 77, TINY["cross_attention_dim"]).expand(f, -1, -1)
    t = torch.full((f,), 300.0)
    a = comfy_unet_call(temporal.model, x, t, ctx, [0])
    x2 = x.clone()
    x2[15] += 1.0
    b = comfy_unet_call(temporal.model, x2, t, ctx, [0])
    assert (a[0] - b[0]).abs().max() > 1e-4  # frame 15 changes frame 0 (joint GroupNorm + temporal attention)
    # The same UNet without the MagicAnimate wrapper is a per-frame SD1.5 UNet: frame 0 does not see frame 15.
    dm = temporal.model.model.diffusion_model
    plain_a = dm(x, t, context=ctx, transformer_options={"cond_or_uncond": [0]})
    plain_b = dm(x2, t, context=ctx, transformer_options={"cond_or_uncond": [0]})
    assert torch.equal(plain_a[0], plain_b[0])


@torch.no_grad()
def test_reference_changes_cond_rows_only_uncond_rows_bit_identical(tiny_models):
    temporal, encoder, _ = tiny_models
    torch.manual_seed(3)
    f = 4
    x = torch.randn(2 * f, 4, H, W)
    ctx = torch.randn(1, 77, TINY["cross_attention_dim"]).expand(2 * f, -1, -1)
    t = torch.full((2 * f,), 700.0)
    plain = comfy_unet_call(temporal.model, x, t, ctx, [1, 0])
    outs = []
    for seed in (10, 11):
        torch.manual_seed(seed)
        m, state = apply_conditioning(temporal.model, Appearance(encoder, torch.randn(1, 4, H, W)), None)
        outs.append(comfy_unet_call(m, x, t, ctx, [1, 0]))
        assert state.stats["encoder_runs"] == 1
    for out in outs:
        assert torch.equal(out[:f], plain[:f])          # uncond rows: plain self-attention, bit-identical
        assert (out[f:] - plain[f:]).abs().max() > 1e-4  # cond rows see the reference
    assert (outs[0][f:] - outs[1][f:]).abs().max() > 1e-4
    # Order is derived, never assumed: cond chunk first gives the same per-chunk results.
    m, _ = apply_conditioning(temporal.model, Appearance(encoder, torch.zeros(1, 4, H, W)), None)
    swapped = comfy_unet_call(m, torch.cat([x[f:], x[:f]]), t, ctx, [0, 1])
    ref = comfy_unet_call(m, x, t, ctx, [1, 0])
    torch.testing.assert_close(swapped, torch.cat([ref[f:], ref[:f]]), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_appearance_bank_equals_oracle_encoder(tiny_files, tiny_models):
    from magicanimate.comfy_adapter.appearance import attn1_modules, run_encoder
    from magicanimate.comfy_adapter.conditioning_state import ConditioningState
    from magicanimate.reference_attention import REFERENCE_BLOCKS

    temporal, encoder, _ = tiny_models
    torch.manual_seed(4)
    ref = torch.randn(1, 4, H, W)
    text = torch.randn(1, 77, TINY["cross_attention_dim"])
    comfy.model_management.load_models_gpu([encoder.patcher])
    state = ConditioningState(Appearance(encoder, ref / SCALE), None, SegmentOptions(),
                              attn1_modules(temporal.model.model.diffusion_model))
    run_encoder(state, torch.tensor([961.0]), text)
    expect = load_oracle_appearance_encoder(tiny_files.appearance)(ref, 961, text)
    for k, key in enumerate(REFERENCE_BLOCKS):
        torch.testing.assert_close(state.bank[key][0], expect[k], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("frames,segments,cfg", [(16, SegmentOptions(), 7.5), (24, SegmentOptions(), 7.5),
                                                 (20, SegmentOptions(8, 2), 2.0),
                                                 (12, SegmentOptions(8, 2, False), 1.0)])
@torch.no_grad()
def test_one_reference_ddim_step_equals_oracle_step(tiny_files, tiny_models, frames, segments, cfg):
    """First step (t 961 -> 921): AE, ControlNet per frame, windows, fusion, CFG and DDIM, all together."""
    temporal, encoder, control = tiny_models
    torch.manual_seed(5)
    z = torch.randn(1, 4, frames, H, W)             # reference x_T (scaled latent space)
    ref = torch.randn(1, 4, H, W)                   # reference latent (scaled)
    poses = torch.rand(frames, 3, H * 8, W * 8)
    text_c = torch.randn(1, 77, TINY["cross_attention_dim"])
    text_u = torch.randn(1, 77, TINY["cross_attention_dim"])
    oracle = load_oracle_unet(tiny_files.temporal_sd, TINY)
    bank = load_oracle_appearance_encoder(tiny_files.appearance)(ref, 961, text_c)
    cn = load_oracle_controlnet(tiny_files.controlnet)
    if segments.closed_loop:
        windows = oracle_windows(frames, segments.length, segments.overlap)
    else:
        windows = segments.windows(frames)
    expect = oracle_step(oracle, bank, cn, poses, z, 961, oracle_alphas_cumprod(), text_c, text_u,
                         guidance_scale=cfg, windows=windows)

    pose = PoseCondition(control, poses.permute(0, 2, 3, 1))
    m, state = apply_conditioning(temporal.model, Appearance(encoder, ref / SCALE), pose, segments)
    latent = torch.zeros(frames, 4, H, W)
    noise = z[0].permute(1, 0, 2, 3)
    out = sample_video(m, [[text_c, {}]], [[text_u, {}]], latent, noise, seed=0, steps=25, cfg=cfg,
                       sigmas=ddim_sigmas(25)[:2])
    ab = alphas_cumprod()
    x_921 = out * SCALE * ab[921].sqrt().item()     # sigma-space latent -> diffusers x_t
    torch.testing.assert_close(x_921.permute(1, 0, 2, 3).unsqueeze(0), expect, atol=2e-4, rtol=1e-4)
    assert state.stats["encoder_runs"] == 1
    assert state.stats["control_frames"] == frames  # ControlNet once per frame per step


@torch.no_grad()
def test_split_cond_uncond_calls_still_run_controlnet_once_per_frame(tiny_models, monkeypatch):
    """Short on memory, ComfyUI runs the CFG halves in separate calls; results and ControlNet work are unchanged."""
    temporal, encoder, control = tiny_models
    torch.manual_seed(6)
    frames = 24
    poses = torch.rand(frames, H * 8, W * 8, 3)
    ref = torch.randn(1, 4, H, W)
    text = [[torch.randn(1, 77, TINY["cross_attention_dim"]), {}]]
    neg = [[torch.randn(1, 77, TINY["cross_attention_dim"]), {}]]
    noise = torch.randn(frames, 4, H, W)
    outs, stats = [], []
    for split in (False, True):
        if split:
            # ComfyUI batches the halves only when memory_required(...) * 1.5 < free memory.
            monkeypatch.setattr(type(temporal.model.model), "memory_required", lambda self, *a, **k: 1e18)
        m, state = apply_conditioning(temporal.model, Appearance(encoder, ref), PoseCondition(control, poses))
        outs.append(sample_video(m, text, neg, torch.zeros(frames, 4, H, W), noise, 0, 25, 7.5,
                                 sigmas=ddim_sigmas(25)[:3]))
        stats.append(dict(state.stats))
    assert (outs[0] - outs[1]).abs().max() <= 1e-5 * outs[0].abs().max()  # fp32 rounding of other batch sizes
    assert stats[0]["control_frames"] == stats[1]["control_frames"] == 2 * frames  # 2 steps, once per frame each
    assert stats[1]["encoder_runs"] == 2
