"""The MagicAnimate MODEL built on a user's SD1.5 MODEL (``model_tree.private_tree``) under newer cores' patchers."""

from __future__ import annotations

import comfy.model_patcher
import comfy.supported_models
import pytest
import torch

from devtools.random_weights.model_files import TINY
from magicanimate.comfy_adapter.loaders import sd15_unet_config
from magicanimate.comfy_adapter.model_tree import DYNAMIC_STATE, private_tree


def _unet_config(config: dict) -> dict:
    chans, ctx = config["block_out_channels"], config["cross_attention_dim"]
    shapes = {"conv_in.weight": (chans[0], 4, 3, 3),
              "down_blocks.0.attentions.0.proj_in.weight": (chans[0], chans[0], 1, 1),
              "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": (chans[0], ctx)}
    for i, c in enumerate(chans):
        shapes[f"down_blocks.{i}.resnets.0.conv2.weight"] = (c, c, 3, 3)
    return sd15_unet_config({k: torch.empty(s, device="meta") for k, s in shapes.items()}, "sd15", "")


def _tiny_sd15():
    config = comfy.supported_models.SD15(_unet_config(TINY))
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


def _sd15_on_meta(config: dict) -> torch.nn.Module:
    """A ``BaseModel`` of ``config``'s widths in fp16 whose weights are on the ``meta`` device (sizes, no memory)."""
    sd15 = comfy.supported_models.SD15(_unet_config(config))
    sd15.set_inference_dtype(torch.float16, None)
    return sd15.get_model({}, "", device=torch.device("meta"))


class _Card:
    """ComfyUI sees one card of ``gib`` GiB whose used memory is what its loaded models hold (weights on ``meta``)."""

    def __init__(self, monkeypatch, gib: float) -> None:
        import comfy.model_management as mm

        self.cap, self.mm = int(gib * 2**30), mm
        monkeypatch.setattr(mm, "current_loaded_models", [])
        monkeypatch.setattr(mm, "vram_state", mm.VRAMState.NORMAL_VRAM)
        monkeypatch.setattr(mm, "get_total_memory", lambda dev=None, torch_total_too=False:
                            (self.cap, self.cap) if torch_total_too else self.cap)
        monkeypatch.setattr(mm, "get_free_memory", lambda dev=None, torch_free_too=False:
                            (self.free(),) * 2 if torch_free_too else self.free())
        monkeypatch.setattr(mm, "soft_empty_cache", lambda *a, **k: None)

    def used(self) -> int:
        return sum(lm.model.loaded_size() for lm in self.mm.current_loaded_models if lm.model is not None)

    def free(self) -> int:
        return self.cap - self.used()

    def holds(self, patcher) -> bool:
        return any(lm.model is patcher and lm.model.loaded_size() > 0 for lm in self.mm.current_loaded_models)


@pytest.mark.parametrize("card_gib", [8, 40])
def test_the_users_unet_makes_room_for_the_magicanimate_models_on_a_small_card(monkeypatch, card_gib):
    """The loader's optional ``model`` input gives the MagicAnimate MODEL a tree of its own (weights shared on the
    host), so on the card it is a second fp16 SD1.5 UNet. ComfyUI never holds both when they do not fit: loading the
    MagicAnimate set (UNet + motion modules, appearance encoder, DensePose ControlNet) for a 48-frame 512x512 video
    unloads the user's UNet from an 8 GiB card; a 40 GiB card keeps it (a cache, no reload for the next prompt)."""
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management as mm
    import comfy.ops
    import comfy.sampler_helpers

    from devtools.random_weights.model_files import FULL
    from magicanimate.comfy_adapter.conditioning import apply_conditioning
    from magicanimate.comfy_adapter.context import SegmentOptions
    from magicanimate.comfy_adapter.loaders import AppearanceEncoderModel
    from magicanimate.comfy_adapter.payloads import Appearance, PoseCondition
    from magicanimate.comfy_adapter.temporal import apply_temporal
    from magicanimate.motion_module import MotionModuleSet

    card, meta = _Card(monkeypatch, card_gib), torch.device("meta")
    monkeypatch.setattr(mm, "unet_offload_device", lambda: meta)

    def patcher(module):
        return comfy.model_patcher.ModelPatcher(module, load_device=meta, offload_device=meta)

    user = patcher(_sd15_on_meta(FULL))
    mm.load_models_gpu([user])  # e.g. a text-to-image sampler made the reference photo with it
    unet_bytes = user.model_size()
    assert card.holds(user) and card.used() == unet_bytes > 1.5 * 2**30
    ops = comfy.ops.disable_weight_init
    temporal = apply_temporal(user, MotionModuleSet(FULL["block_out_channels"], ops=ops, dtype=torch.float16,
                                                    device=meta))
    mm.load_models_gpu([user])  # loaded again by another sampler after the loader ran
    encoder = AppearanceEncoderModel(patcher(_sd15_on_meta(FULL)), [], "appearance_encoder")
    control_config = {k: v for k, v in _unet_config(FULL).items() if k != "out_channels"}
    control = comfy.cldm.cldm.ControlNet(**control_config, hint_channels=3, dtype=torch.float16, device=meta,
                                         operations=ops)
    pose = PoseCondition(comfy.controlnet.ControlNet(control, load_device=meta), torch.zeros(48, 512, 512, 3))
    ours, _ = apply_conditioning(temporal, Appearance(encoder, torch.zeros(1, 4, 64, 64)), pose, SegmentOptions())
    # What core's CFGGuider does before it loads the models for sampling: the MODEL's wrappers (the context-window
    # batch cut, our window memory estimate) into the options, then prepare_sampling for the whole video.
    conds = {"positive": [], "negative": []}
    options = comfy.model_patcher.create_model_options_clone(ours.model_options)
    comfy.sampler_helpers.prepare_model_patcher(ours, conds, options)
    comfy.sampler_helpers.prepare_sampling(ours, (48, 4, 64, 64), conds, options)
    ours_set = [ours, encoder.patcher, pose.control_net.control_model_wrapped]
    assert all(card.holds(m) for m in ours_set)
    assert ours.model_size() > unet_bytes + 0.7 * 2**30  # the motion modules count as the MODEL's own weights
    assert card.used() <= card.cap
    assert card.holds(user) is (card_gib == 40)
