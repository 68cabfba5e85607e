"""Several reference images (beyond the reference): the bank concatenates every image's tokens per block; one image
is bit-identical to the single-reference path; unconditional rows never see any reference."""

from __future__ import annotations

import comfy.model_management
import torch

from devtools.random_weights.model_files import TINY
from magicanimate.comfy_adapter import appearance
from magicanimate.comfy_adapter.appearance import attn1_modules, run_encoder
from magicanimate.comfy_adapter.conditioning import apply_conditioning
from magicanimate.comfy_adapter.conditioning_state import ConditioningState
from magicanimate.comfy_adapter.context import SegmentOptions
from magicanimate.comfy_adapter.payloads import Appearance, PoseCondition
from magicanimate.comfy_adapter.sampling import sample_video
from magicanimate.reference_attention import REFERENCE_BLOCKS
from magicanimate.schedule import ddim_sigmas

from .test_denoising_step import comfy_unet_call

H = W = 8


def _bank(temporal, encoder, latent, text, t=961.0):
    comfy.model_management.load_models_gpu([encoder.patcher])
    state = ConditioningState(Appearance(encoder, latent), None, SegmentOptions(),
                              attn1_modules(temporal.model.model.diffusion_model))
    run_encoder(state, torch.tensor([t]), text)
    return state.bank


def _single_image_encoder(state, t, context):
    """The single-reference path as it was before several images were allowed (batch 1, bank ``(1, N, C)``)."""
    enc = state.appearance.encoder.patcher.model
    dm = enc.diffusion_model
    dtype = enc.manual_cast_dtype or enc.get_dtype()
    latent = enc.process_latent_in(state.appearance.latent.to(device=t.device, dtype=torch.float32))
    bank = {}

    def capture(n, context_attn1, value_attn1, extra):
        key = (extra["block"][0], extra["block"][1], extra.get("block_index", 0))
        if key in state.attn1:
            bank[key] = n.detach()
        return n, context_attn1, value_attn1

    bank[REFERENCE_BLOCKS[-1]] = appearance.encoder_features(
        dm, latent.to(dtype), t[:1].to(torch.float32), context.to(device=t.device, dtype=dtype), capture).detach()
    state.bank, state.kv = bank, {}
    state.stats["encoder_runs"] += 1


@torch.no_grad()
def test_two_images_bank_holds_both_cond_rows_change_uncond_rows_plain(tiny_models):
    temporal, encoder, _ = tiny_models
    torch.manual_seed(20)
    front, back = torch.randn(1, 4, H, W), torch.randn(1, 4, H, W)
    text = torch.randn(1, 77, TINY["cross_attention_dim"])
    both = _bank(temporal, encoder, torch.cat([front, back]), text)
    alone = [_bank(temporal, encoder, x, text) for x in (front, back)]
    for key in REFERENCE_BLOCKS:
        n = alone[0][key].shape[1]
        assert both[key].shape == (1, 2 * n, alone[0][key].shape[2])   # keys concatenate along the token axis
        torch.testing.assert_close(both[key][:, :n], alone[0][key], atol=2e-5, rtol=1e-4)  # fp32 rounding of batch 2
        torch.testing.assert_close(both[key][:, n:], alone[1][key], atol=2e-5, rtol=1e-4)  # fp32 rounding of batch 2

    f = 4
    x = torch.randn(2 * f, 4, H, W)
    ctx = torch.randn(1, 77, TINY["cross_attention_dim"]).expand(2 * f, -1, -1)
    t = torch.full((2 * f,), 700.0)
    plain = comfy_unet_call(temporal.model, x, t, ctx, [1, 0])
    outs = {}
    for name, latent in (("front", front), ("both", torch.cat([front, back]))):
        m, state = apply_conditioning(temporal.model, Appearance(encoder, latent), None)
        outs[name] = comfy_unet_call(m, x, t, ctx, [1, 0])
        assert state.stats["encoder_runs"] == 1                     # all images in one encoder run
        assert torch.equal(outs[name][:f], plain[:f])               # uncond rows: plain UNet, bit-identical
        assert (outs[name][f:] - plain[f:]).abs().max() > 1e-4      # cond rows see the references
    assert (outs["both"][f:] - outs["front"][f:]).abs().max() > 1e-4  # the second image is attended to


@torch.no_grad()
def test_one_image_gives_bit_identical_latents_to_the_single_reference_path(tiny_models, monkeypatch):
    temporal, encoder, control = tiny_models
    torch.manual_seed(21)
    frames = 4
    ref = torch.randn(1, 4, H, W)
    poses = torch.rand(frames, H * 8, W * 8, 3)
    text = [[torch.randn(1, 77, TINY["cross_attention_dim"]), {}]]
    neg = [[torch.randn(1, 77, TINY["cross_attention_dim"]), {}]]
    noise = torch.randn(frames, 4, H, W)
    outs = []
    for encoder_fn in (appearance.run_encoder, _single_image_encoder):
        monkeypatch.setattr(appearance, "run_encoder", encoder_fn)
        m, _ = apply_conditioning(temporal.model, Appearance(encoder, ref), PoseCondition(control, poses))
        outs.append(sample_video(m, text, neg, torch.zeros(frames, 4, H, W), noise, 0, 25, 7.5,
                                 sigmas=ddim_sigmas(25)[:3]))
    assert torch.equal(outs[0], outs[1])
