"""The motion modules reached by ComfyUI's LoRA and merge machinery, on tiny random models.

The motion modules are ``diffusion_model.motion_modules`` of the MagicAnimate MODEL: AnimateDiff-layout motion LoRAs
(the Motion LoRA node), core LoraLoaderModelOnly with ComfyUI's generic key form and ModelMergeSimple patch them, the
SD1.5 UNet keys stay as they were, and a user's SD1.5 MODEL given to the loader stays a plain SD1.5 MODEL.
"""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.sample
import comfy.sd
import pytest
import torch
from safetensors.torch import save_file

from devtools.pack import load_pack, pack_nodes
from devtools.random_weights.model_files import TINY, write_temporal_checkpoint
from magicanimate.comfy_adapter.loaders import build_unet, load_temporal_model
from magicanimate.comfy_adapter.motion_lora import apply_motion_lora
from magicanimate.comfy_adapter.sampling import sample_video
from magicanimate.comfy_adapter.temporal import MOTION_PREFIX
from magicanimate.errors import CheckpointError, MagicAnimateError
from magicanimate.motion_module import motion_module_keys, placements

CTX = [[torch.full((1, 77, TINY["cross_attention_dim"]), 0.3), {}]]
PROJECTIONS = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}


def animatediff_motion_lora(seed: int = 0, rank: int = 4, mid_block: bool = False) -> dict[str, torch.Tensor]:
    """A random motion LoRA with AnimateDiff v2's key names (``...processor.to_q_lora.up.weight``), tiny widths."""
    g = torch.Generator().manual_seed(seed)
    modules = [(f"{side}_blocks.{b}.motion_modules.{j}", width) for side, b, j, width in placements(
        TINY["block_out_channels"])]
    if mid_block:
        modules.append(("mid_block.motion_modules.0", TINY["block_out_channels"][-1]))
    lora = {}
    for prefix, width in modules:
        for a in range(2):
            for proj in PROJECTIONS:
                name = f"{prefix}.temporal_transformer.transformer_blocks.0.attention_blocks.{a}.processor.{proj}_lora"
                lora[f"{name}.down.weight"] = torch.randn(rank, width, generator=g) * 0.3
                lora[f"{name}.up.weight"] = torch.randn(width, rank, generator=g) * 0.3
    return lora


def video(model, frames: int = 3) -> torch.Tensor:
    """One DDIM step of the temporal MODEL alone (no appearance, no pose) on ``frames`` 8x8 latents."""
    latent = torch.zeros(frames, 4, 8, 8)
    noise = torch.randn(frames, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    return sample_video(model, CTX, CTX, latent, noise, 0, 1, 1.0)


def loaded_weight(model, key: str) -> torch.Tensor:
    """``key``'s weight as ComfyUI patches it when it loads ``model`` for sampling."""
    comfy.model_management.load_models_gpu([model])
    try:
        return model.model.state_dict()[key].clone()
    finally:
        comfy.model_management.unload_all_models()


@pytest.fixture(scope="module")
def temporal(tiny_models):
    return tiny_models[0].model


def test_animatediff_motion_lora_patches_every_attention_projection_and_changes_the_video(temporal):
    lora = animatediff_motion_lora()
    patched, count, unmatched = apply_motion_lora(temporal, lora, 1.0, "zoom.safetensors")
    assert unmatched == [] and count == len(lora) // 2 == 160  # every up/down pair: none "not loaded"
    expected = {f"{MOTION_PREFIX}{k}" for k in motion_module_keys()
                if ".attention_blocks." in k and k.endswith(("to_q.weight", "to_k.weight", "to_v.weight",
                                                             "to_out.0.weight"))}
    assert set(patched.patches) == expected and not temporal.patches
    key = f"{MOTION_PREFIX}up_blocks.1.motion_modules.2.temporal_transformer.transformer_blocks.0.attention_blocks.1" \
          ".to_out.0.weight"
    name = ("up_blocks.1.motion_modules.2.temporal_transformer.transformer_blocks.0.attention_blocks.1.processor"
            ".to_out_lora")
    want = temporal.model.state_dict()[key] + lora[f"{name}.up.weight"] @ lora[f"{name}.down.weight"]
    assert torch.allclose(loaded_weight(patched, key), want, atol=1e-6)
    plain = video(temporal)
    assert (video(patched) - plain).abs().max() > 1e-3
    unpatched, count0, _ = apply_motion_lora(temporal, lora, 0.0, "zoom.safetensors")
    assert count0 == 0 and torch.equal(video(unpatched), plain)


def test_motion_lora_node_loads_a_file_from_the_loras_folder_and_warns_about_mid_block_keys(temporal, tmp_path,
                                                                                            monkeypatch, caplog):
    import folder_paths

    from magicanimate.checkpoints import read_state_dict

    (tmp_path / "loras").mkdir()
    save_file(animatediff_motion_lora(seed=2, mid_block=True), str(tmp_path / "loras" / "v2_lora_PanLeft.safetensors"))
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)},
              str(tmp_path / "loras" / "sd15_style.safetensors"))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras",
                        ([str(tmp_path / "loras")], set(folder_paths.supported_pt_extensions)))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    node = pack_nodes()["MagicAnimateMotionLoRA"]
    assert node.validate_inputs(lora_name="v2_lora_PanLeft.safetensors", strength=0.8) is True
    assert "not one of its options" in node.validate_inputs(lora_name="../../etc/passwd", strength=1.0)
    assert "finite" in node.validate_inputs(lora_name="v2_lora_PanLeft.safetensors", strength=float("nan"))
    with caplog.at_level(logging.WARNING, logger="MagicAnimate"):
        patched = node.execute(temporal, "v2_lora_PanLeft.safetensors", 0.8).result[0]
    assert len(patched.patches) == 160 and "16 of the tensors" in caplog.text and "mid_block" in caplog.text
    direct, _, _ = apply_motion_lora(temporal, read_state_dict(tmp_path / "loras" / "v2_lora_PanLeft.safetensors"),
                                     0.8, "x")
    assert torch.equal(video(patched), video(direct))
    pack_error = load_pack().magicanimate.errors.CheckpointError  # the node's package is imported on its own
    with pytest.raises(pack_error, match="sd15_style.safetensors holds no LoRA weights for MagicAnimate's motion"):
        node.execute(temporal, "sd15_style.safetensors", 1.0)
    with pytest.raises(pack_error, match="not a LoRA file listed"):
        node.execute(temporal, "../loras/v2_lora_PanLeft.safetensors", 1.0)


def test_motion_lora_refuses_a_plain_model_and_a_lora_of_another_width(temporal, tiny_files):
    spatial = {k: v for k, v in tiny_files.temporal_sd.items() if ".motion_modules." not in k}
    plain, _, _ = build_unet(spatial, "base", "hint", torch.float32)
    with pytest.raises(MagicAnimateError, match="no motion modules; connect the MODEL output of Load MagicAnimate"):
        apply_motion_lora(plain, animatediff_motion_lora(), 1.0, "x")
    wide = {k: torch.zeros(4, 320) if k.endswith("down.weight") else torch.zeros(320, 4)
            for k in animatediff_motion_lora()}
    with pytest.raises(CheckpointError, match="wide.ckpt: .* another size"):
        apply_motion_lora(temporal, wide, 1.0, "wide.ckpt")


def test_core_lora_loader_patches_motion_weights_in_the_generic_form(temporal, caplog):
    key = f"{MOTION_PREFIX}down_blocks.1.motion_modules.0.temporal_transformer.proj_in.weight"
    g = torch.Generator().manual_seed(5)
    up, down = torch.randn(64, 2, generator=g), torch.randn(2, 64, generator=g)
    lora = {key[:-len(".weight")] + ".lora_up.weight": up, key[:-len(".weight")] + ".lora_down.weight": down}
    with caplog.at_level(logging.WARNING):
        patched, _ = comfy.sd.load_lora_for_models(temporal, None, lora, 0.5, 0)
    assert "NOT LOADED" not in caplog.text and list(patched.patches) == [key]
    want = temporal.model.state_dict()[key] + 0.5 * up @ down
    assert torch.allclose(loaded_weight(patched, key), want, atol=1e-6)
    assert (video(patched) - video(temporal)).abs().max() > 1e-3


def test_model_merge_simple_interpolates_the_motion_weights(temporal, tiny_files, tmp_path):
    from comfy_extras.nodes_model_merging import ModelMergeSimple

    other_path = tmp_path / "other.ckpt"
    write_temporal_checkpoint(other_path, TINY, seed=9)
    other = load_temporal_model(str(other_path), torch.float32).model
    ratio = 0.25
    merged = ModelMergeSimple().merge(temporal, other, ratio)[0]
    for key in (f"{MOTION_PREFIX}up_blocks.2.motion_modules.1.temporal_transformer.proj_out.weight",
                f"{MOTION_PREFIX}down_blocks.0.motion_modules.1.temporal_transformer.transformer_blocks.0."
                "attention_blocks.0.to_k.weight", "diffusion_model.input_blocks.1.0.in_layers.2.weight"):
        w1, w2 = temporal.model.state_dict()[key], other.model.state_dict()[key]
        assert not torch.allclose(w1, w2)
        assert torch.allclose(loaded_weight(merged, key), ratio * w1 + (1 - ratio) * w2, atol=1e-6), key


def test_state_dict_keys_are_the_sd15_unets_plus_the_motion_modules(temporal, tiny_files):
    spatial = {k: v for k, v in tiny_files.temporal_sd.items() if ".motion_modules." not in k}
    plain, _, _ = build_unet(spatial, "base", "hint", torch.float32)
    keys = set(temporal.model_state_dict())
    motion = {k for k in keys if k.startswith(MOTION_PREFIX)}
    assert motion == {MOTION_PREFIX + k for k in motion_module_keys()}
    assert keys - motion == set(plain.model_state_dict())


def core_sample(model) -> torch.Tensor:
    """One Euler step of core ``comfy.sample.sample`` (what KSampler runs) on a 2-latent batch."""
    latent = torch.zeros(2, 4, 8, 8)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    return comfy.sample.sample(model, noise, 1, 1.0, "euler", "normal", CTX, CTX, latent, disable_pbar=True, seed=0)


def test_loader_leaves_the_users_sd15_model_plain(tiny_files, tmp_path):
    """The loader's MODEL input: its keys, weights, size and core sampling output are unchanged, even while it was
    loaded with a LoRA patched into its weights when the loader ran."""
    spatial = {k: v for k, v in tiny_files.temporal_sd.items() if ".motion_modules." not in k}
    base, _, _ = build_unet(spatial, "base", "hint", torch.float32)
    key = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    g = torch.Generator().manual_seed(4)
    user = comfy.sd.load_lora_for_models(base, None, {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.randn(32, 2,
                                                                                                      generator=g),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.randn(2, 32,
                                                                                                        generator=g),
    }, 1.0, 0)[0]
    keys = set(user.model_state_dict())
    weights = {k: v.clone() for k, v in base.model.state_dict().items()}
    size = user.model_size()
    before = core_sample(user)
    comfy.model_management.load_models_gpu([user])  # the user's MODEL is loaded, its LoRA patched in place
    assert not torch.equal(user.model.state_dict()[key], weights[key])
    motion_only = tmp_path / "mm.ckpt"
    write_temporal_checkpoint(motion_only, TINY, seed=4, kind="motion_only")
    ours = load_temporal_model(str(motion_only), torch.float32, base_model=user).model
    assert ours.patches.keys() == user.patches.keys()  # the user's LoRA still applies to the MagicAnimate MODEL
    video(ours)
    assert torch.equal(core_sample(user), before)
    video(apply_motion_lora(ours, animatediff_motion_lora(), 1.0, "x")[0])
    assert torch.equal(core_sample(user), before)
    comfy.model_management.unload_all_models()
    assert set(user.model_state_dict()) == keys and not hasattr(user.model.diffusion_model, "motion_modules")
    assert user.model_size() == size and ours.model_size() > size
    assert all(torch.equal(v, weights[k]) for k, v in user.model.state_dict().items())
    # Back from a GPU, ComfyUI gives each weight a new CPU copy; a full unload points ours at the shared storage again.
    theirs = dict(user.model.named_parameters())
    for p in ours.model.parameters():
        p.data = p.data.clone()
    ours.detach()
    assert all(p.data_ptr() == theirs[k].data_ptr() for k, p in ours.model.named_parameters() if k in theirs)
