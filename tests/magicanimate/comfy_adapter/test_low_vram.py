"""ComfyUI's low-VRAM mode on a fake CUDA device (``FakeTensorMode``, as ``bench/fake_gpu_dry_run.py``): the weights
stay on the CPU and every module casts its own to the card per call.

Each model the sampler loads (the temporal UNet with its motion modules and joint GroupNorm, the appearance encoder,
the DensePose ControlNet, a core ControlNet applied by ``ControlNetApplyAdvanced``) goes through ComfyUI's own
``patch_model(device_to=cuda, lowvram_model_memory=...)`` with a budget no module fits in, as on a card too small for
any of them. A weight used on the card without ComfyUI's cast, or any tensor left on the CPU, meets CUDA tensors in
an operation and raises, exactly as on a GPU.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import TINY32, hint_frames, text

from devtools.random_weights.model_files import write_controlnet

FRAMES, SIZE = 20, 64  # padded to 32 frames: three windows of 16 (overlap 4), the last one wrapping


@pytest.fixture
def half_networks(tiny_files, tmp_path):
    """The tiny networks in float16 on the CPU, loaded for this test alone (low-VRAM loading marks their modules),
    and a second ControlNet standing for one applied through core nodes."""
    from magicanimate.comfy_adapter.loaders import (
        load_appearance_encoder,
        load_densepose_controlnet,
        load_temporal_model,
    )

    write_controlnet(tmp_path / "core_cn", dict(block_out_channels=TINY32["block_out_channels"],
                                                cross_attention_dim=32), seed=7)
    return (load_temporal_model(str(tiny_files.temporal), torch.float16).model,
            load_appearance_encoder(str(tiny_files.appearance), torch.float16),
            load_densepose_controlnet(str(tiny_files.controlnet), torch.float16),
            load_densepose_controlnet(str(tmp_path / "core_cn"), torch.float16))


@pytest.mark.slow
@torch.no_grad()
def test_low_vram_sampling_casts_every_weight_per_call(half_networks, monkeypatch):
    import comfy.ldm.modules.attention as comfy_attention
    import comfy.model_management as mm
    import comfy.ops
    import comfy.sampler_helpers
    from torch._subclasses.fake_tensor import FakeTensorMode

    import nodes as comfy_nodes
    from bench.fake_cuda import flash_sdpa
    from magicanimate.comfy_adapter.conditioning import apply_conditioning
    from magicanimate.comfy_adapter.context import SegmentOptions
    from magicanimate.comfy_adapter.payloads import Appearance, PoseCondition
    from magicanimate.comfy_adapter.sampling import sample_video
    from magicanimate.schedule import ddim_sigmas
    from magicanimate.windows import padded_length

    temporal, encoder, control, core_control = half_networks
    cuda, budget = torch.device("cuda", 0), 8 * 2**30
    # The loaders ran on the CPU machine: the card is where each model would load (the sampling device).
    for patcher in (temporal, encoder.patcher, control.control_model_wrapped, core_control.control_model_wrapped):
        monkeypatch.setattr(patcher, "load_device", cuda)
    for c in (control, core_control):
        monkeypatch.setattr(c, "load_device", cuda)
    loaded = []

    def load_models_gpu(models, *args, **kwargs):
        for m in models:
            if not m.is_injected and m not in loaded:
                loaded.append(m)
                # ComfyUI's own low-VRAM load with a budget no module fits in: nothing is moved, every module with
                # comfy_cast_weights casts its weights per call.
                m.patch_model(device_to=cuda, lowvram_model_memory=1, load_weights=True)

    monkeypatch.setattr(mm, "get_torch_device", lambda: cuda)
    monkeypatch.setattr(mm, "get_free_memory",
                        lambda dev=None, torch_free_too=False: (budget, budget) if torch_free_too else budget)
    monkeypatch.setattr(mm, "get_total_memory",
                        lambda dev=None, torch_total_too=False: (budget, budget) if torch_total_too else budget)
    monkeypatch.setattr(mm, "load_models_gpu", load_models_gpu)
    monkeypatch.setattr(comfy.sampler_helpers.comfy.model_management, "load_models_gpu", load_models_gpu)
    monkeypatch.setattr(mm, "soft_empty_cache", lambda force=False: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(comfy_attention, "optimized_attention", comfy_attention.attention_pytorch)
    monkeypatch.setattr(comfy_attention, "optimized_attention_masked", comfy_attention.attention_pytorch)
    monkeypatch.setattr(comfy.ops, "scaled_dot_product_attention", flash_sdpa)

    casts = []
    cast_bias_weight = comfy.ops.cast_bias_weight

    def counting_cast(s, *args, **kwargs):
        x = args[0] if args else kwargs.get("input")
        casts.append((type(s).__name__, str(x.device)))
        return cast_bias_weight(s, *args, **kwargs)

    monkeypatch.setattr(comfy.ops, "cast_bias_weight", counting_cast)

    total, h = padded_length(FRAMES), SIZE // 8
    gen = torch.Generator().manual_seed(0)
    pos, neg = comfy_nodes.ControlNetApplyAdvanced().apply_controlnet(text(0.5), text(), core_control,
                                                                      hint_frames(FRAMES), 0.8, 0.0, 1.0)
    appearance = Appearance(encoder, torch.randn(1, 4, h, h, generator=gen))
    pose = PoseCondition(control, torch.rand(FRAMES, SIZE, SIZE, 3, generator=gen))
    model, state = apply_conditioning(temporal, appearance, pose, SegmentOptions())
    noise = torch.randn(total, 4, h, h, generator=gen)

    impls = torch._subclasses.fake_impls.op_implementations_dict
    scalar_ops = (torch.ops.aten.item.default, torch.ops.aten._local_scalar_dense.default)
    for op in scalar_ops:  # fake tensors hold no values; a scalar read only steers a branch
        monkeypatch.setitem(impls, op, lambda fake_mode, func, arg: True if arg.dtype == torch.bool
                            else (1.0 if arg.dtype.is_floating_point else 1))
    with FakeTensorMode(allow_non_fake_inputs=True):
        out = sample_video(model, pos, neg, torch.zeros(total, 4, h, h), noise, 0, 25, 7.5, sigmas=ddim_sigmas(25)[:2])

    assert out.shape == (total, 4, h, h)
    assert state.stats["windows"] == 3 and state.stats["encoder_runs"] == 1
    # Four models were loaded the low-VRAM way, and none of their weights moved to the card.
    assert len(loaded) == 4
    for patcher in loaded:
        assert patcher.model.model_lowvram
        assert {p.device.type for p in patcher.model.parameters()} == {"cpu"}
    # Convolutions, linear layers and norms of every network cast their weights to the card per call.
    assert {(kind, "cuda:0") for kind in ("Conv2d", "Linear", "GroupNorm", "LayerNorm")} <= set(casts), \
        sorted(set(casts))
