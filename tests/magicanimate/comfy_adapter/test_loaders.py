"""The real loaders on files in the real layouts: round trips, accepted variants, refusals, full-size detection."""

from __future__ import annotations

import hashlib
import json

import comfy.model_detection
import comfy.model_management
import comfy.ops
import comfy.utils
import pytest
import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from devtools.oracle import OracleUNet3D
from devtools.random_weights.model_files import (
    APPEARANCE_ENCODER_DROPPED_PREFIXES,
    FULL,
    TINY,
    _diffusers_unet2d,
    _shapes_on_meta,
    appearance_encoder_config,
    write_temporal_checkpoint,
)
from magicanimate.comfy_adapter.loaders import (
    build_unet,
    load_appearance_encoder,
    load_densepose_controlnet,
    load_temporal_model,
    sd15_unet_config,
)
from magicanimate.diffusers_keys import is_unused_tail as _is_unused_tail
from magicanimate.errors import CheckpointError


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def comfy_weights_as_diffusers(patcher) -> dict[str, torch.Tensor]:
    dm = patcher.model.diffusion_model
    sd = dm.state_dict()
    mapping = comfy.utils.unet_to_diffusers(patcher.model.model_config.unet_config)
    return {dk: sd[ck] for dk, ck in mapping.items() if ck in sd}


def test_round_trip_returns_identical_tensors_and_keeps_state_dict_keys(tiny_files):
    before = sha(tiny_files.temporal)
    loaded = load_temporal_model(str(tiny_files.temporal), torch.float32)
    file_sd = tiny_files.temporal_sd
    spatial = comfy_weights_as_diffusers(loaded.model)
    spatial_keys = [k for k in file_sd if ".motion_modules." not in k]
    assert set(spatial) == set(spatial_keys)
    assert all(torch.equal(spatial[k], file_sd[k]) for k in spatial_keys)
    motion = loaded.motion.state_dict()
    assert len(motion) == 560 and all(torch.equal(motion[k], file_sd[k]) for k in motion)
    model_sd = loaded.model.model_state_dict()  # the motion weights are the MODEL's own (LoRAs, merges, offload)
    assert all(torch.equal(model_sd["diffusion_model.motion_modules." + k], file_sd[k]) for k in motion)
    keys_plain = set(loaded.model.model.diffusion_model.state_dict())
    comfy.model_management.load_models_gpu([loaded.model])  # patch_model -> injections active
    assert loaded.model.is_injected
    assert set(loaded.model.model.diffusion_model.state_dict()) == keys_plain
    from magicanimate.comfy_adapter.sampling import sample_video

    latent = torch.zeros(2, 4, 8, 8)
    ctx = [[torch.zeros(1, 77, TINY["cross_attention_dim"]), {}]]
    sample_video(loaded.model, ctx, ctx, latent, torch.randn_like(latent), 0, 1, 1.0)
    loaded_patchers = [m.model for m in comfy.model_management.current_loaded_models]
    assert any(p.model is loaded.model.model for p in loaded_patchers)
    assert loaded.model.model.diffusion_model.motion_modules is loaded.motion  # motion modules load with the UNet
    assert sha(tiny_files.temporal) == before


@pytest.mark.parametrize("variant", [dict(wrapper="state_dict"), dict(prefix="module."), dict(prefix="unet."),
                                     dict(fmt="safetensors", dtype=torch.float16)])
def test_accepted_temporal_variants(tmp_path, variant):
    suffix = ".safetensors" if variant.get("fmt") == "safetensors" else ".ckpt"
    path = tmp_path / f"temporal{suffix}"
    sd = write_temporal_checkpoint(path, TINY, seed=3, **variant)
    loaded = load_temporal_model(str(path), torch.float32)
    spatial = comfy_weights_as_diffusers(loaded.model)
    assert torch.equal(spatial["conv_in.weight"], sd["conv_in.weight"].float())
    key = "up_blocks.3.motion_modules.2.temporal_transformer.proj_out.weight"
    assert torch.equal(loaded.motion.state_dict()[key], sd[key].float())


def test_motion_only_file_takes_spatial_weights_from_model_input(tmp_path, tiny_files):
    path = tmp_path / "mm.ckpt"
    write_temporal_checkpoint(path, TINY, seed=4, kind="motion_only")
    with pytest.raises(CheckpointError, match="only motion modules.*MODEL"):
        load_temporal_model(str(path))
    spatial = {k: v for k, v in tiny_files.temporal_sd.items() if ".motion_modules." not in k}
    base, missing, _ = build_unet(spatial, "base", "hint", torch.float32)
    assert not missing
    loaded = load_temporal_model(str(path), base_model=base)
    assert loaded.spatial_source == "MODEL input"
    # A tree of its own (the motion modules stay out of the user's MODEL) that shares the base's weight storage.
    assert loaded.model.model is not base.model and not hasattr(base.model.diffusion_model, "motion_modules")
    ours = dict(loaded.model.model.named_parameters())
    for key, p in base.model.named_parameters():
        assert ours[key] is not p and ours[key].data_ptr() == p.data_ptr()


def test_refusals_name_the_file_and_leave_it_untouched(tmp_path):
    sdxl = {"conv_in.weight": torch.zeros(320, 4, 3, 3), "add_embedding.linear_1.weight": torch.zeros(1280, 2816)}
    sdxl.update({k: torch.zeros(1) for k in write_temporal_checkpoint(tmp_path / "x.ckpt", TINY, kind="motion_only")})
    path = tmp_path / "sdxl_unet.ckpt"
    torch.save(sdxl, path)
    before = sha(path)
    with pytest.raises(CheckpointError, match="sdxl_unet.ckpt is an SDXL"):
        load_temporal_model(str(path))
    assert sha(path) == before
    empty = tmp_path / "ae_no_config"
    empty.mkdir()
    (empty / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="ae_no_config has no config.json"):
        load_appearance_encoder(str(empty))
    with pytest.raises(CheckpointError, match="model folder not found"):
        load_densepose_controlnet(str(tmp_path / "nowhere"))


def test_controlnet_and_encoder_refuse_each_other(tiny_files):
    with pytest.raises(CheckpointError, match="is a ControlNet, not the appearance encoder"):
        load_appearance_encoder(str(tiny_files.controlnet))
    with pytest.raises(CheckpointError, match="not a diffusers ControlNet"):
        load_densepose_controlnet(str(tiny_files.appearance))


def test_full_size_config_equals_comfyui_detection_and_encoder_tail_is_the_24_missing_keys():
    """Full-size shapes (meta tensors): our shape-based SD1.5 config is what ComfyUI's own detection finds."""
    shapes, module = _shapes_on_meta(lambda: OracleUNet3D(**FULL))
    sd = {k: v for k, v in module.state_dict().items() if ".motion_modules." not in k}
    ours = sd15_unet_config(sd, "full", "hint")
    theirs = comfy.model_detection.unet_config_from_diffusers_unet(sd)
    assert theirs is not None
    for key, value in theirs.items():
        if key != "dtype":
            assert ours[key] == value, key
    ae = _diffusers_unet2d(appearance_encoder_config(FULL), meta=True).state_dict()
    kept = {k for k in ae if not k.startswith(APPEARANCE_ENCODER_DROPPED_PREFIXES)}
    assert len(ae) - len(kept) == 24
    mapping = comfy.utils.unet_to_diffusers(ours)
    existing = set(UNetModel(**ours, device="meta", operations=comfy.ops.disable_weight_init).state_dict())
    missing_comfy = {ck for dk, ck in mapping.items() if dk not in kept and ck in existing}
    assert len(missing_comfy) == 24 and all(_is_unused_tail(k) for k in missing_comfy)
    assert not any(_is_unused_tail(mapping[k]) for k in kept if k in mapping)


def test_encoder_loads_with_tail_zeroed_and_config_is_read(tiny_files):
    enc = load_appearance_encoder(str(tiny_files.appearance), torch.float32)
    assert len(enc.missing_keys) == 24 and all(_is_unused_tail(k) for k in enc.missing_keys)
    params = dict(enc.patcher.model.diffusion_model.named_parameters())
    assert all(torch.count_nonzero(params[k]) == 0 for k in enc.missing_keys if k in params)
    cfg = json.loads((tiny_files.appearance / "config.json").read_text())
    assert cfg["_class_name"] == "AppearanceEncoderModel"
