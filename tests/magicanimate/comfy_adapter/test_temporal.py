"""Stage-1 patches in isolation: joint GroupNorm in ResBlocks, motion-module placement and limits, segments."""

from __future__ import annotations

import comfy.model_management
import pytest
import torch
import torch.nn.functional as F

from magicanimate.comfy_adapter.context import SegmentHandler, SegmentOptions
from magicanimate.comfy_adapter.temporal import joint_norm_targets, motion_targets
from magicanimate.motion_module import MotionModule
from magicanimate.windows import pyramid_weights


def injected(temporal):
    comfy.model_management.load_models_gpu([temporal.model])
    assert temporal.model.is_injected
    return temporal.model.model.diffusion_model


def frames_state(temporal):
    wrapper = next(iter(temporal.model.wrappers["diffusion_model"].values()))[0]
    return wrapper.__closure__[0].cell_contents  # the TemporalState the wrapper sets


@torch.no_grad()
def test_resblock_groupnorm_statistics_span_the_window(tiny_models):
    temporal, _, _ = tiny_models
    dm = injected(temporal)
    state = frames_state(temporal)
    resblock = dm.input_blocks[1][0]
    torch.manual_seed(0)
    f = 16
    x = torch.randn(2 * f, resblock.channels, 8, 8)
    emb = torch.randn(2 * f, resblock.emb_channels)
    x2 = x.clone()
    x2[15] += 3.0   # frame 15 of the first chunk
    state.frames = f
    try:
        a, b = resblock(x, emb), resblock(x2, emb)
        norm = resblock.in_layers[0]
        x5 = x.view(2, f, *x.shape[1:]).transpose(1, 2)
        expect = F.group_norm(x5, 32, norm.weight, norm.bias, norm.eps).transpose(1, 2).reshape(x.shape)
        torch.testing.assert_close(norm(x), expect)
    finally:
        state.frames = None
    assert (a[0] - b[0]).abs().max() > 1e-3          # frame 0 sees frame 15 through the statistics
    assert torch.equal(a[f:], b[f:])                 # the other chunk (the other CFG half) does not
    plain_a, plain_b = resblock(x, emb), resblock(x2, emb)
    assert torch.equal(plain_a[0], plain_b[0])       # outside a MagicAnimate forward: plain per-frame SD1.5


def test_motion_modules_follow_the_reference_layers(tiny_models):
    temporal, _, _ = tiny_models
    dm = temporal.model.model.diffusion_model
    targets = motion_targets(dm)
    assert len(targets) == 20
    names = {where: type(layer).__name__ for layer, where in targets}
    assert names[("down", 0, 0)] == "SpatialTransformer" and names[("down", 3, 1)] == "ResBlock"
    assert names[("up", 0, 2)] == "ResBlock" and names[("up", 3, 2)] == "SpatialTransformer"
    # up block 0 layer 2 = output block 2, whose Upsample comes after the motion module
    assert type(dm.output_blocks[2][-1]).__name__ == "Upsample"
    assert len(joint_norm_targets(dm)) == 2 * (8 + 2 + 12) + 1  # 22 ResBlocks x 2 norms + output norm


def test_window_longer_than_24_positions_is_refused():
    mm = MotionModule(32)
    with pytest.raises(ValueError, match="at most 24"):
        mm(torch.zeros(25, 32, 2, 2), 25)
    with pytest.raises(ValueError, match="1..24"):
        SegmentOptions(length=25)


def test_segment_handler_uses_our_windows_and_tensor_indexing():
    handler = SegmentHandler(SegmentOptions())
    windows = handler.get_context_windows(None, torch.zeros(48, 4, 2, 2), {})
    assert [w.index_list for w in windows] == SegmentOptions().windows(48)
    full = torch.zeros(48, 1)
    w = windows[-1]
    w.add_window(full, torch.ones(16, 1))
    assert full[36:48].sum() == 12 and full[0:4].sum() == 4 and w.get_tensor(torch.arange(48.0)).tolist()[-1] == 3.0
    pyramid = SegmentHandler(SegmentOptions(fuse="pyramid"))
    assert pyramid.fuse == "pyramid"


def test_segment_handler_fuses_windows_below_cfg_with_the_fuse_weights():
    """The handler's own loop: every window's prediction, times its fuse weight, averaged per frame; the timestep
    need not be one of the sampler's sigmas (windows never shift between steps)."""
    x = torch.arange(48.0).reshape(48, 1, 1, 1).repeat(1, 4, 2, 2)
    t = torch.full((48,), 5.0)
    conds = [[{"model_conds": {}}], [{"model_conds": {}}]]
    seen = []

    def calc(model, sub_conds, sub_x, sub_t, model_options):
        window = model_options["transformer_options"]["context_window"]
        seen.append((window.index_list, sub_x.shape[0], sub_t.shape[0], len(sub_conds)))
        assert torch.equal(sub_x[:, 0, 0, 0], torch.tensor(window.index_list, dtype=torch.float32))
        return [sub_x * 2, sub_x + torch.arange(sub_x.shape[0], dtype=torch.float32).reshape(-1, 1, 1, 1)]

    for fuse in ("average", "pyramid"):
        seen.clear()
        handler = SegmentHandler(SegmentOptions(fuse=fuse))
        options = {"transformer_options": {"sample_sigmas": torch.zeros(3)}}
        assert handler.should_use_context(None, conds, x, t, options)
        cond_out, uncond_out = handler.execute(calc, None, conds, x, t, options)
        windows = SegmentOptions().windows(48)
        assert [s[0] for s in seen] == windows and all(s[1:] == (16, 16, 2) for s in seen)
        assert "context_window" not in options["transformer_options"]
        assert torch.equal(cond_out, x * 2)  # a per-frame function survives any weighted average exactly
        weights = torch.tensor([1.0] * 16 if fuse == "average" else [float(w) for w in pyramid_weights(16)])
        expect = torch.zeros(48)
        total = torch.zeros(48)
        for w in windows:
            expect.index_add_(0, torch.tensor(w), (torch.tensor(w, dtype=torch.float32) + torch.arange(16.0)) * weights)
            total.index_add_(0, torch.tensor(w), weights)
        assert torch.allclose(uncond_out[:, 0, 0, 0], expect / total)
    assert not SegmentHandler(SegmentOptions()).should_use_context(None, conds, x[:16], t[:16], {})
