"""Sanity tests of the test oracle itself (devtools/oracle) and the random-weight model files (TINY size, CPU)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from safetensors.torch import load_file

from devtools.oracle import (
    BANK_BLOCK_NAMES,
    MOTION_MODULE_KEY_SUFFIXES,
    OracleAppearanceEncoder,
    OracleUNet3D,
    motion_module_prefixes,
    oracle_alphas_cumprod,
    oracle_controlnet_residuals,
    oracle_ddim_update,
    oracle_guided_eps,
    oracle_step,
    oracle_timesteps,
    oracle_windows,
    sinusoidal_position_table,
)
from devtools.random_weights.model_files import (
    APPEARANCE_ENCODER_DROPPED_PREFIXES,
    FULL,
    TINY,
    appearance_encoder_config,
    load_oracle_appearance_encoder,
    load_oracle_controlnet,
    load_oracle_unet,
    make_unet3d_state_dict,
    random_state_dict,
    write_appearance_encoder,
    write_controlnet,
    write_temporal_checkpoint,
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

    # Shapes of spec §3.3 and widths of spec §2.3 item 6.
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
        assert n_params == 417_137_600  # spec §2.3: 417.1376 M

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
# Scheduler and windows
# ----------------------------------------------------------------------------------------------------------------------


def _diffusers_ddim():
    return diffusers.DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="linear", steps_offset=1, clip_sample=False
    )


def test_timesteps():
    assert oracle_timesteps(25) == list(range(961, 0, -40))
    assert oracle_timesteps(25)[:3] == [961, 921, 881] and oracle_timesteps(25)[-1] == 1
    for steps in (25, 30, 20, 50):
        sched = _diffusers_ddim()
        sched.set_timesteps(steps)
        assert oracle_timesteps(steps) == sched.timesteps.tolist(), steps


def test_alphas_cumprod_and_ddim_update():
    ac = oracle_alphas_cumprod()
    sched = _diffusers_ddim()
    torch.testing.assert_close(ac, sched.alphas_cumprod, rtol=0, atol=0)
    assert ac[961].item() == pytest.approx(0.002478, abs=1e-6)
    assert ac[1].item() == pytest.approx(0.998290, abs=1e-6)
    assert ac[999].item() == pytest.approx(0.001579, abs=1e-6)

    sched.set_timesteps(25)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 3, 8, 8, generator=gen)
    for t in (961, 481, 41, 1):
        eps = torch.randn(1, 4, 3, 8, 8, generator=gen)
        expected = sched.step(eps, t, x, eta=0.0).prev_sample
        torch.testing.assert_close(oracle_ddim_update(x, eps, t, ac, 40), expected, rtol=1e-5, atol=1e-5)
    # The last step returns x0 exactly (alpha_prev = 1).
    eps = torch.randn(1, 4, 3, 8, 8, generator=gen)
    x0 = (x - (1 - ac[1]) ** 0.5 * eps) / ac[1] ** 0.5
    torch.testing.assert_close(oracle_ddim_update(x, eps, 1, ac, 40), x0)


def test_windows_match_spec_table():
    def r(a, b):
        return list(range(a, b + 1))

    assert oracle_windows(16) == [r(0, 15)]
    assert oracle_windows(10) == [r(0, 9)]
    assert oracle_windows(24) == [r(0, 15), r(12, 23) + r(0, 3)]
    assert oracle_windows(24, overlap=0) == [r(0, 15), r(16, 23) + r(0, 7)]
    assert oracle_windows(32) == [r(0, 15), r(12, 27), r(24, 31) + r(0, 7)]
    assert oracle_windows(32, overlap=0) == [r(0, 15), r(16, 31)]
    assert oracle_windows(48) == [r(0, 15), r(12, 27), r(24, 39), r(36, 47) + r(0, 3)]
    w100 = oracle_windows(100)
    assert len(w100) == 9 and w100[-1] == r(96, 99) + r(0, 11)
    assert [w[0] for w in w100] == list(range(0, 100, 12))
    assert len(oracle_windows(100, overlap=0)) == 7 and oracle_windows(100, overlap=0)[-1] == r(96, 99) + r(0, 11)
    for frames, count in [(96, 8), (112, 10), (128, 11)]:
        ws = oracle_windows(frames)
        assert len(ws) == count == math.ceil(frames / 12)
        assert len(oracle_windows(frames, overlap=0)) == frames // 16
    assert oracle_windows(112)[-1] == r(108, 111) + r(0, 11)
    assert oracle_windows(128)[-1] == r(120, 127) + r(0, 7)
    assert oracle_windows(96)[-1] == r(84, 95) + r(0, 3)
    # spec §6 item 1: open loop still wraps for 32 but not for 64.
    assert oracle_windows(32, closed_loop=False)[-1] == r(24, 31) + r(0, 7)
    assert all(max(w) - min(w) == 15 for w in oracle_windows(64, closed_loop=False))


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
# Fixture files
# ----------------------------------------------------------------------------------------------------------------------


def test_random_weights_rules(tiny_sd):
    assert torch.equal(make_unet3d_state_dict(TINY, seed=0)["conv_in.weight"], tiny_sd["conv_in.weight"])
    assert not torch.equal(make_unet3d_state_dict(TINY, seed=1)["conv_in.weight"], tiny_sd["conv_in.weight"])
    for k, v in tiny_sd.items():
        assert torch.isfinite(v).all()
        if "temporal_transformer.proj_out" in k:
            assert v.abs().max() > 0
    norm = tiny_sd["down_blocks.1.resnets.0.norm1.weight"]
    assert (norm - 1).abs().max() < 0.5
    shapes = {"a.weight": (3, 4), "a.bias": (3,)}
    assert torch.equal(random_state_dict(shapes, 7)["a.weight"], random_state_dict(shapes, 7)["a.weight"])


@pytest.mark.parametrize(
    "kind,fmt,wrapper,prefix",
    [
        ("full", "ckpt", None, ""),
        ("full", "ckpt", "state_dict", "module."),
        ("motion_only", "ckpt", None, "unet."),
        ("full", "safetensors", None, ""),
        ("motion_only", "safetensors", None, "module."),
    ],
)
def test_write_temporal_checkpoint(tmp_path, tiny_sd, kind, fmt, wrapper, prefix):
    path = tmp_path / f"temporal_attention.{fmt}"
    written = write_temporal_checkpoint(
        path, TINY, seed=0, kind=kind, fmt=fmt, dtype=torch.float16, wrapper=wrapper, prefix=prefix
    )
    if fmt == "safetensors":
        raw = load_file(str(path))
    else:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
        if wrapper == "state_dict":
            assert raw["global_step"] == 0
            raw = raw["state_dict"]
    assert all(k.startswith(prefix) for k in raw)
    raw = {k[len(prefix) :]: v for k, v in raw.items()}
    assert set(raw) == set(written)
    expected_keys = set(tiny_sd) if kind == "full" else {k for k in tiny_sd if ".motion_modules." in k}
    assert set(written) == expected_keys
    assert len([k for k in raw if ".motion_modules." in k]) == 560
    for k, v in raw.items():
        assert v.dtype == torch.float16
        assert torch.equal(v, tiny_sd[k].half()), k


@pytest.mark.parametrize("cfg", [TINY, FULL], ids=["tiny", "full"])
def test_appearance_encoder_dropped_keys(cfg):
    model = _diffusers_unet(cfg, meta=True)
    dropped = [k for k in model.state_dict() if k.startswith(APPEARANCE_ENCODER_DROPPED_PREFIXES)]
    assert len(dropped) == 24
    assert all(any(k.startswith(p) for k in dropped) for p in APPEARANCE_ENCODER_DROPPED_PREFIXES)
    kept = set(model.state_dict()) - set(dropped)
    for name in ("norm1.weight", "norm1.bias"):
        assert f"{BANK_BLOCK_NAMES[-1]}.{name}" in kept
    assert "up_blocks.3.attentions.2.proj_in.weight" in kept and "up_blocks.3.attentions.2.norm.weight" in kept


@torch.no_grad()
def test_appearance_encoder_files_and_bank(tmp_path):
    folder = tmp_path / "appearance_encoder"
    written = write_appearance_encoder(folder, TINY, seed=1)
    assert (folder / "config.json").exists()
    on_disk = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    assert set(on_disk) == set(written)
    encoder = load_oracle_appearance_encoder(folder)

    # Reference: a complete diffusers 2D UNet with the same weights (+ arbitrary tail), captured without early stop.
    full = diffusers.UNet2DConditionModel.from_config(appearance_encoder_config(TINY))
    missing = full.load_state_dict(written, strict=False).missing_keys
    assert len(missing) == 24
    store: dict[int, torch.Tensor] = {}
    for k, name in enumerate(BANK_BLOCK_NAMES):
        full.get_submodule(name + ".norm1").register_forward_hook(lambda _m, _i, o, k=k: store.__setitem__(k, o))
    gen = torch.Generator().manual_seed(6)
    latent = torch.randn(1, 4, 16, 16, generator=gen)
    text = torch.randn(1, 77, 32, generator=gen)
    full.eval()(latent, torch.tensor(481), encoder_hidden_states=text)

    bank = encoder(latent, 481, text)
    assert sorted(bank) == list(range(10))
    assert [tuple(bank[k].shape) for k in range(10)] == [(4, 128)] + [(16, 128)] * 3 + [(64, 64)] * 3 + [(256, 32)] * 3
    for k in range(10):
        torch.testing.assert_close(bank[k], store[k][0], rtol=1e-5, atol=1e-5)
    # The bank depends on t.
    assert (encoder(latent, 41, text)[9] - bank[9]).abs().max() > 1e-3
    assert isinstance(encoder, OracleAppearanceEncoder)


@torch.no_grad()
def test_controlnet_files(tmp_path):
    folder = tmp_path / "densepose_controlnet"
    written = write_controlnet(folder, TINY, seed=2)
    for k in [f"controlnet_down_blocks.{i}.weight" for i in range(12)] + [
        "controlnet_mid_block.weight",
        "controlnet_cond_embedding.conv_out.weight",
    ]:
        assert written[k].abs().max() > 0, k
    cn = load_oracle_controlnet(folder)
    assert cn.config.controlnet_conditioning_channel_order == "rgb"
    assert tuple(cn.config.conditioning_embedding_out_channels) == (16, 32, 96, 256)
    gen = torch.Generator().manual_seed(7)
    x_t = torch.randn(1, 4, 3, 8, 8, generator=gen)
    frames = torch.rand(3, 3, 64, 64, generator=gen)
    text = torch.randn(1, 77, 32, generator=gen)
    down, mid = oracle_controlnet_residuals(cn, frames, x_t, 481, text, chunk=2)
    assert len(down) == 12 and mid.shape == (3, 128, 1, 1)
    # Per frame: frame 1 alone gives the same residuals as within the batch.
    down1, mid1 = oracle_controlnet_residuals(cn, frames[1:2], x_t[:, :, 1:2], 481, text)
    # atol: fp32 convolutions of a batch of 2 and of 1 frame accumulate in different orders (measured up to 1.07e-5
    # on the 2-core CI machine, also on the tree before this session); mixing frames would differ far more.
    for a, b in zip(down, down1, strict=True):
        torch.testing.assert_close(a[1:2], b, rtol=1e-4, atol=5e-5)
        assert a.abs().max() > 0


# ----------------------------------------------------------------------------------------------------------------------
# One step
# ----------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_oracle_step_windows_and_cfg(tmp_path, tiny_unet):
    write_controlnet(tmp_path / "cn", TINY)
    cn = load_oracle_controlnet(tmp_path / "cn")
    gen = torch.Generator().manual_seed(8)
    num_frames = 6
    x_t = torch.randn(1, 4, num_frames, 8, 8, generator=gen)
    frames = torch.rand(num_frames, 3, 64, 64, generator=gen)
    text = torch.randn(1, 77, 32, generator=gen)
    bank_shapes = [(1, 128)] + [(4, 128)] * 3 + [(16, 64)] * 3 + [(64, 32)] * 3
    bank = {k: torch.randn(s, generator=gen) for k, s in enumerate(bank_shapes)}
    ac = oracle_alphas_cumprod()
    windows = oracle_windows(num_frames, size=4, overlap=2)  # [0..3], [2..5], [4,5,0,1]
    assert windows == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 0, 1]]

    eps = oracle_guided_eps(tiny_unet, bank, cn, frames, x_t, 481, text, text, 7.5, windows)

    # Manual recomputation: every frame covered by exactly two windows here.
    down, mid = oracle_controlnet_residuals(cn, frames, x_t, 481, text)
    acc = torch.zeros(2, 4, num_frames, 8, 8)
    for w in windows:
        idx = torch.tensor(w)
        res = [d[idx].permute(1, 0, 2, 3)[None].repeat(2, 1, 1, 1, 1) for d in down]
        mres = mid[idx].permute(1, 0, 2, 3)[None].repeat(2, 1, 1, 1, 1)
        out = tiny_unet(
            x_t[:, :, idx].repeat(2, 1, 1, 1, 1),
            481,
            text.repeat(2, 1, 1),
            res,
            mres,
            bank,
            torch.tensor([False, True]),
        )
        acc[:, :, idx] += out
    fused = acc / 2
    expected = fused[0:1] + 7.5 * (fused[1:2] - fused[0:1])
    torch.testing.assert_close(eps, expected, rtol=1e-4, atol=1e-4)

    x_prev = oracle_step(tiny_unet, bank, cn, frames, x_t, 481, ac, text, text, 7.5, windows, step_ratio=40)
    torch.testing.assert_close(x_prev, oracle_ddim_update(x_t, eps, 481, ac, 40))
    assert torch.isfinite(x_prev).all()

    # guidance 1 = cond half only.
    eps1 = oracle_guided_eps(tiny_unet, bank, cn, frames, x_t, 481, text, text, 1.0, windows)
    torch.testing.assert_close(eps1, fused[1:2], rtol=1e-4, atol=1e-4)


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
    (MagicAnimate's is per frame, spec §2.3). With identical input frames the two norms coincide, and the PE still
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
