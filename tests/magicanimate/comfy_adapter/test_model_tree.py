"""The MagicAnimate MODEL built on a user's SD1.5 MODEL (``model_tree.private_tree``) under newer cores' patchers."""

from __future__ import annotations

import comfy.model_patcher
import comfy.supported_models
import pytest
import torch

from devtools.random_weights.model_files import TINY
from magicanimate.comfy_adapter.loaders import sd15_unet_config
from magicanimate.comfy_adapter.model_tree import DYNAMIC_STATE, private_tree


def _tiny_sd15():
    chans, ctx = TINY["block_out_channels"], TINY["cross_attention_dim"]
    meta = {"conv_in.weight": torch.empty(chans[0], 4, 3, 3, device="meta"),
            "down_blocks.0.attentions.0.proj_in.weight": torch.empty(chans[0], chans[0], 1, 1, device="meta"),
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": torch.empty(chans[0], ctx,
                                                                                             device="meta")}
    for i, c in enumerate(chans):
        meta[f"down_blocks.{i}.resnets.0.conv2.weight"] = torch.empty(c, c, 3, 3, device="meta")
    config = comfy.supported_models.SD15(sd15_unet_config(meta, "tiny", ""))
    config.set_inference_dtype(torch.float32, None)
    return config.get_model({}, "")


def test_private_tree_of_a_plain_model_patcher_shares_weights_not_loading_state():
    user = comfy.model_patcher.ModelPatcher(_tiny_sd15(), load_device=torch.device("cpu"),
                                            offload_device=torch.device("cpu"))
    ours = private_tree(user)
    assert ours.model is not user.model and ours.parent is None
    pairs = list(zip(user.model.parameters(), ours.model.parameters(), strict=True))
    assert pairs and all(a is not b and a.data_ptr() == b.data_ptr() for a, b in pairs)
    assert ours.model.model_config is user.model.model_config  # shared description, not deep-copied
    assert ours.backup is not user.backup and ours.pinned is not user.pinned
    if hasattr(user, "backup_buffers"):
        assert ours.backup_buffers is not user.backup_buffers


class _HostBuffer:
    """Stands for comfy_aimdo's pinned host buffer (its library loads only beside an NVIDIA driver)."""

    def __init__(self, *args) -> None:
        self.args = args


def test_private_tree_of_a_dynamic_vram_patcher_gets_its_own_dynamic_state(monkeypatch):
    """Newer ComfyUI on NVIDIA cards gives core's models a ModelPatcherDynamic, whose loading state lives on the
    module tree; the MagicAnimate MODEL's tree starts with its own, and the user's tree keeps exactly its own."""
    dynamic = getattr(comfy.model_patcher, "ModelPatcherDynamic", None)
    if dynamic is None:
        pytest.skip("this ComfyUI has no dynamic VRAM (ModelPatcherDynamic)")
    import comfy_aimdo.host_buffer

    monkeypatch.setattr(comfy_aimdo.host_buffer, "HostBuffer", _HostBuffer)
    cuda = torch.device("cuda", 0)  # never touched: no weight moves, the host buffers are stand-ins
    user = dynamic(_tiny_sd15(), load_device=cuda, offload_device=torch.device("cpu"))
    assert type(user) is dynamic
    before = {name: getattr(user.model, name) for name in DYNAMIC_STATE}
    pins_before = dict(before["dynamic_pins"])
    ours = private_tree(user)
    assert type(ours) is dynamic and ours.model is not user.model
    for name in DYNAMIC_STATE:
        assert getattr(ours.model, name) is not before[name], name
        assert getattr(user.model, name) is before[name], name
    assert user.model.dynamic_pins == pins_before
    assert set(ours.model.dynamic_pins) == {cuda} and ours.model.dynamic_pins[cuda] is not pins_before[cuda]
    assert ours.model.dynamic_patchers == {id(ours)} and id(ours) not in user.model.dynamic_patchers
    assert id(user) in user.model.dynamic_patchers
    assert ours.backup_buffers is not user.backup_buffers
