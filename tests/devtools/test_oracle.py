"""The test oracle itself (devtools/oracle): key layout, the spatial part against diffusers' 2D UNet, motion
modules and reference attention, cross-checks against independent diffusers code (TINY size, CPU)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from devtools.oracle import (
    BANK_BLOCK_NAMES,
    MOTION_MODULE_KEY_SUFFIXES,
    OracleUNet3D,
    motion_module_prefixes,
    sinusoidal_position_table,
)
from devtools.random_weights.model_files import (
    FULL,
    TINY,
    load_oracle_unet,
    make_unet3d_state_dict,
)

diffusers = pytest.importorskip("diffusers")

_DOWN = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
_UP = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3


def _diffusers_unet(cfg: dict, meta: bool = False):
    kwargs = dict(
        block_out_channels=cfg["block_out_channels"],
        cross_attention_dim=cfg["cross_attention_dim"],
        attention_head_dim=8,
        layers_per_block=2,
        down_block_types=_DOWN,
        up_block_types=_UP,
        sample_size=64,
    )
    if meta:
        with torch.device("meta"):
            return diffusers.UNet2DConditionModel(**kwargs)
    return diffusers.UNet2DConditionModel(**kwargs)


def _spatial(sd: dict) -> dict:
    return {k: v for k, v in sd.items() if ".motion_modules." not in k}


def _zero_motion_proj_out(sd: dict) -> dict:
    sd = dict(sd)
    for k in sd:
        if ".motion_modules." in k and "temporal_transformer.proj_out." in k:
            sd[k] = torch.zeros_like(sd[k])
    return sd


@pytest.fixture(scope="module")
def tiny_sd() -> dict:
    return make_unet3d_state_dict(TINY, seed=0)


@pytest.fixture(scope="module")
def tiny_unet(tiny_sd) -> OracleUNet3D:
    return load_oracle_unet(tiny_sd, TINY)


# ----------------------------------------------------------------------------------------------------------------------
# Key layout
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [TINY, FULL], ids=["tiny", "full"])
def test_state_dict_keys_are_diffusers_plus_560_motion_keys(cfg):
    with torch.device("meta"):
        oracle = OracleUNet3D(**cfg)
    sd = oracle.state_dict()
    ref = _diffusers_unet(cfg, meta=True).state_dict()

    expected_motion = {f"{p}.{s}" for p in motion_module_prefixes() for s in MOTION_MODULE_KEY_SUFFIXES}
    assert len(expected_motion) == 560
    assert set(sd) == set(ref) | expected_motion
    for k, v in ref.items():
        assert tuple(sd[k].shape) == tuple(v.shape), k

    # Key shapes and widths: docs/ARCHITECTURE.md, "Motion-module checkpoint keys".
    c0, c1, c2, c3 = cfg["block_out_channels"]
    widths = {"down_blocks.0": c0, "down_blocks.1": c1, "down_blocks.2": c2, "down_blocks.3": c3}
    widths |= {"up_blocks.0": c3, "up_blocks.1": c2, "up_blocks.2": c1, "up_blocks.3": c0}
    n_params = 0
    for k in expected_motion:
        c = widths[k.split(".motion_modules.")[0]]
        shape = tuple(sd[k].shape)
        if k.endswith("pos_encoder.pe"):
            assert shape == (1, 24, c)
            continue
        n_params += math.prod(shape)
        if "ff.net.0.proj.weight" in k:
            assert shape == (8 * c, c)
        elif "ff.net.0.proj.bias" in k:
            assert shape == (8 * c,)
        elif "ff.net.2.weight" in k:
            assert shape == (c, 4 * c)
        elif k.endswith(".weight") and re.search(r"(proj_in|proj_out|to_[qkv]|to_out\.0)\.weight$", k):
            assert shape == (c, c)
        else:
            assert shape == (c,)
    all_widths = [c0, c0, c1, c1, c2, c2, c3, c3] + [c3] * 3 + [c2] * 3 + [c1] * 3 + [c0] * 3
    assert n_params == sum(22 * c * c + 21 * c for c in all_widths)
    if cfg is FULL:
        assert n_params == 417_137_600  # 417.1376 M motion-module parameters at SD1.5 widths

    # The PE buffers are persistent and proj_in of spatial transformers is a 1x1 conv.
    assert "down_blocks.0.attentions.0.proj_in.weight" in sd
    assert tuple(sd["down_blocks.0.attentions.0.proj_in.weight"].shape) == (c0, c0, 1, 1)


def test_pe_table_values():
    pe = sinusoidal_position_table(24, 320)
    assert pe.shape == (1, 24, 320)
    assert torch.all(pe[0, 0, 0::2] == 0) and torch.all(pe[0, 0, 1::2] == 1)
    for p, i in [(1, 0), (5, 3), (15, 100), (23, 159)]:
        angle = p * 10000.0 ** (-2 * i / 320)
        assert pe[0, p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert pe[0, p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    with torch.device("meta"):
        shapes = OracleUNet3D(**TINY).state_dict()
    unet = OracleUNet3D(**TINY)
    key = "up_blocks.2.motion_modules.1.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"
    assert key in shapes
    torch.testing.assert_close(unet.state_dict()[key], sinusoidal_position_table(24, 64), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------------
# The spatial part equals diffusers' 2D UNet
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_2d(tiny_sd):
    ref = _diffusers_unet(TINY)
    ref.load_state_dict(_spatial(tiny_sd), strict=True)
    return ref.eval()


@pytest.fixture(scope="module")
def tiny_unet_no_motion(tiny_sd) -> OracleUNet3D:
    return load_oracle_unet(_zero_motion_proj_out(tiny_sd), TINY)


@torch.no_grad()
def test_single_frame_equals_diffusers_2d(tiny_unet_no_motion, tiny_2d):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 16, 16, generator=gen)
    text = torch.randn(2, 77, 32, generator=gen)
    expected = tiny_2d(x, torch.tensor(481), encoder_hidden_states=text).sample
    got = tiny_unet_no_motion(x[:, :, None], 481, text)[:, :, 0]
    assert (got - expected).abs().max().item() < 1e-4
    assert expected.abs().mean().item() > 0.05  # not a degenerate comparison


@torch.no_grad()
def test_identical_frames_equal_diffusers_2d(tiny_unet_no_motion, tiny_2d):
    """Joint GroupNorm over identical frames equals per-frame GroupNorm, so every frame equals the 2D output."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 16, 16, generator=gen)
    text = torch.randn(1, 77, 32, generator=gen)
    expected = tiny_2d(x, torch.tensor(961), encoder_hidden_states=text).sample
    got = tiny_unet_no_motion(x[:, :, None].expand(-1, -1, 3, -1, -1).contiguous(), 961, text)
    for frame in range(3):
        assert (got[:, :, frame] - expected).abs().max().item() < 1e-4


@torch.no_grad()
def test_controlnet_residual_plumbing_equals_diffusers(tiny_unet_no_motion, tiny_2d):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 16, 16, generator=gen)
    text = torch.randn(1, 77, 32, generator=gen)
    c0, c1, c2, c3 = TINY["block_out_channels"]
    shapes = [(c0, 16)] * 3 + [(c0, 8), (c1, 8), (c1, 8), (c1, 4), (c2, 4), (c2, 4), (c2, 2), (c3, 2), (c3, 2)]
    downs = [torch.randn(1, c, s, s, generator=gen) for c, s in shapes]
    mid = torch.randn(1, c3, 2, 2, generator=gen)
    expected = tiny_2d(
        x,
        torch.tensor(201),
        encoder_hidden_states=text,
        down_block_additional_residuals=[d.clone() for d in downs],
        mid_block_additional_residual=mid.clone(),
    ).sample
    got = tiny_unet_no_motion(x[:, :, None], 201, text, [d[:, :, None] for d in downs], mid[:, :, None])[:, :, 0]
    assert (got - expected).abs().max().item() < 1e-4
    plain = tiny_unet_no_motion(x[:, :, None], 201, text)[:, :, 0]
    assert (got - plain).abs().max().item() > 1e-2


# ----------------------------------------------------------------------------------------------------------------------
# Motion modules and reference attention
# ----------------------------------------------------------------------------------------------------------------------


def _capture_norm1(unet: OracleUNet3D):
    store: dict[int, torch.Tensor] = {}
    handles = []
    for k, name in enumerate(BANK_BLOCK_NAMES):

        def hook(_m, _i, out, k=k):
            store[k] = out

        handles.append(unet.get_submodule(name + ".norm1").register_forward_hook(hook))
    return store, handles


@torch.no_grad()
def test_reference_attention_with_own_tokens_is_identity(tiny_unet):
    """Attending to [n, n] equals attending to [n]: a bank equal to the row's own norm1 output changes nothing."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, 4, 1, 16, 16, generator=gen)
    text = torch.randn(1, 77, 32, generator=gen)
    store, handles = _capture_norm1(tiny_unet)
    plain = tiny_unet(x, 301, text)
    for h in handles:
        h.remove()
    bank = {k: v[0].clone() for k, v in store.items()}
    assert [tuple(bank[k].shape) for k in range(10)] == [(4, 128)] + [(16, 128)] * 3 + [(64, 64)] * 3 + [(256, 32)] * 3
    same = tiny_unet(x, 301, text, reference_bank=bank, ref_rows=torch.tensor([True]))
    torch.testing.assert_close(same, plain, rtol=1e-4, atol=1e-4)
    # A different bank changes the cond rows only.
    other = {k: torch.randn(v.shape, generator=gen) for k, v in bank.items()}
    x2 = x.expand(2, -1, -1, -1, -1)
    out = tiny_unet(x2, 301, text.expand(2, -1, -1), reference_bank=other, ref_rows=torch.tensor([False, True]))
    torch.testing.assert_close(out[0:1], plain, rtol=1e-4, atol=1e-4)
    assert (out[1:2] - plain).abs().max().item() > 1e-2


@torch.no_grad()
def test_motion_modules_mix_frames(tiny_unet, tiny_unet_no_motion):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4, 4, 8, 8, generator=gen)
    text = torch.randn(1, 77, 32, generator=gen)
    base = tiny_unet(x, 601, text)
    x_mod = x.clone()
    x_mod[:, :, 3] += 1.0
    changed = tiny_unet(x_mod, 601, text)
    # Frame 0 depends on frame 3 (joint GroupNorm + temporal attention) ...
    assert (changed[:, :, 0] - base[:, :, 0]).abs().max().item() > 1e-3
    # ... and the motion modules matter.
    assert (tiny_unet_no_motion(x, 601, text) - base).abs().max().item() > 1e-2
    # Frame order matters through the positional encoding (a permutation is not equivariant).
    perm = torch.tensor([2, 0, 3, 1])
    permuted = tiny_unet(x[:, :, perm], 601, text)
    assert (permuted - base[:, :, perm]).abs().max().item() > 1e-4
    # Without motion modules, the network is permutation-equivariant over frames.
    torch.testing.assert_close(
        tiny_unet_no_motion(x[:, :, perm], 601, text), tiny_unet_no_motion(x, 601, text)[:, :, perm]
    )


# ----------------------------------------------------------------------------------------------------------------------
# Cross-checks of the non-2D parts against independent diffusers code
# ----------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_reference_attention_equals_diffusers_attn1_with_concatenated_context(tiny_sd, tiny_unet_no_motion, tiny_2d):
    """MagicAnimate's read is ``attn1(n, encoder_hidden_states=cat([n, bank]))``: emulate it on diffusers' 2D UNet."""
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(1, 4, 16, 16, generator=gen)
    text = torch.randn(1, 77, 32, generator=gen)
    bank_shapes = [(4, 128)] + [(16, 128)] * 3 + [(64, 64)] * 3 + [(256, 32)] * 3
    bank = {k: torch.randn(s, generator=gen) for k, s in enumerate(bank_shapes)}

    handles = []
    for k, name in enumerate(BANK_BLOCK_NAMES):

        def pre_hook(_m, args, kwargs, k=k):
            hidden = args[0] if args else kwargs["hidden_states"]
            kwargs = dict(kwargs)
            kwargs["encoder_hidden_states"] = torch.cat([hidden, bank[k][None]], dim=1)
            return args, kwargs

        handles.append(tiny_2d.get_submodule(name + ".attn1").register_forward_pre_hook(pre_hook, with_kwargs=True))
    try:
        expected = tiny_2d(x, torch.tensor(641), encoder_hidden_states=text).sample
    finally:
        for h in handles:
            h.remove()
    got = tiny_unet_no_motion(x[:, :, None], 641, text, reference_bank=bank, ref_rows=torch.tensor([True]))[:, :, 0]
    assert (got - expected).abs().max().item() < 1e-4
    plain = tiny_2d(x, torch.tensor(641), encoder_hidden_states=text).sample
    assert (expected - plain).abs().max().item() > 1e-2


@torch.no_grad()
def test_motion_module_equals_diffusers_animatediff_block_on_identical_frames(tiny_unet):
    """diffusers' ``AnimateDiffTransformer3D`` is the same motion module except that its GroupNorm is joint over frames
    (MagicAnimate's is per frame). With identical input frames the two norms coincide, and the PE still
    makes every frame's output different, so this checks everything but the norm placement."""
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    mm = tiny_unet.get_submodule("up_blocks.2.motion_modules.1")
    c = 64
    ref = AnimateDiffTransformer3D(
        num_attention_heads=8,
        attention_head_dim=c // 8,
        in_channels=c,
        norm_num_groups=32,
        double_self_attention=True,
        positional_embeddings="sinusoidal",
        num_positional_embeddings=24,
    ).eval()
    mapped = {}
    for k, v in mm.state_dict().items():
        k = k.removeprefix("temporal_transformer.")
        k = k.replace("attention_blocks.0.", "attn1.").replace("attention_blocks.1.", "attn2.")
        k = k.replace("norms.0.", "norm1.").replace("norms.1.", "norm2.").replace("ff_norm.", "norm3.")
        k = k.replace("attn1.pos_encoder.pe", "pos_embed.pe").replace("attn2.pos_encoder.pe", "pos_embed.pe")
        mapped[k] = v
    missing, unexpected = ref.load_state_dict(mapped, strict=False)
    assert not missing and not unexpected

    gen = torch.Generator().manual_seed(10)
    b, f, h, w = 2, 5, 4, 4
    frame = torch.randn(b, c, 1, h, w, generator=gen)
    x = frame.expand(-1, -1, f, -1, -1).contiguous()  # (b, C, f, h, w), identical frames
    got = mm(x)
    folded = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    expected = ref(folded, num_frames=f).reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (got[:, :, 0] - got[:, :, 3]).abs().max().item() > 1e-3  # PE makes frames differ
