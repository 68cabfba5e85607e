"""The random-weight model files (devtools/random_weights): deterministic weights, the real file layouts and key
sets, and networks that compute like the reference's (TINY size, CPU)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from devtools.oracle import (
    BANK_BLOCK_NAMES,
    OracleAppearanceEncoder,
    oracle_controlnet_residuals,
)
from devtools.random_weights.model_files import (
    APPEARANCE_ENCODER_DROPPED_PREFIXES,
    FULL,
    TINY,
    _diffusers_unet2d,
    appearance_encoder_config,
    diffusers_shapes,
    load_oracle_appearance_encoder,
    load_oracle_controlnet,
    make_unet3d_state_dict,
    random_state_dict,
    write_appearance_encoder,
    write_controlnet,
    write_model_set,
    write_temporal_checkpoint,
)

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def tiny_sd() -> dict:
    return make_unet3d_state_dict(TINY, seed=0)


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
    model = _diffusers_unet2d(appearance_encoder_config(cfg), meta=True)
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
    # on the 2-core CI machine); mixing frames would differ far more.
    for a, b in zip(down, down1, strict=True):
        torch.testing.assert_close(a[1:2], b, rtol=1e-4, atol=5e-5)
        assert a.abs().max() > 0




def test_model_set_from_recorded_shapes_equals_the_one_diffusers_describes(tmp_path, monkeypatch):
    # The GPU machine has no diffusers: it writes the diffusers folders from shapes recorded here (diffusers_shapes).
    shapes = diffusers_shapes(TINY)
    write_model_set(tmp_path / "described", TINY)
    import devtools.random_weights.model_files as model_files

    def no_diffusers(*args, **kwargs):
        raise AssertionError("diffusers was asked although the shapes were given")

    monkeypatch.setattr(model_files, "_diffusers_unet2d", no_diffusers)
    monkeypatch.setattr(model_files, "_diffusers_controlnet", no_diffusers)
    write_model_set(tmp_path / "recorded", TINY, shapes=shapes)
    files = sorted(f.relative_to(tmp_path / "described") for f in (tmp_path / "described").rglob("*") if f.is_file())
    assert len(files) == 5
    for name in files:
        assert (tmp_path / "recorded" / name).read_bytes() == (tmp_path / "described" / name).read_bytes(), name
