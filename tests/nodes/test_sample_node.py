"""TemporalSample / PoseControl / SegmentFuse executed directly on tiny models (no server)."""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.utils
import pytest
import torch
from fixtures.model_files import write_appearance_encoder, write_controlnet, write_temporal_checkpoint
from pack_loader import pack_nodes

from magicanimate.comfy_adapter.loaders import load_appearance_encoder, load_densepose_controlnet, load_temporal_model
from magicanimate.comfy_adapter.payloads import Appearance
from magicanimate.densepose import viridis_curve

CFG = dict(block_out_channels=(32, 64, 128, 128), cross_attention_dim=32)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ma")
    write_temporal_checkpoint(root / "t.ckpt", CFG, seed=0)
    write_appearance_encoder(root / "ae", CFG, seed=1)
    write_controlnet(root / "cn", CFG, seed=2)
    return (load_temporal_model(str(root / "t.ckpt"), torch.float32).model,
            load_appearance_encoder(str(root / "ae"), torch.float32), load_densepose_controlnet(str(root / "cn")))


def viridis_frames(n, size=64):
    curve = viridis_curve()
    idx = torch.zeros(n, size, size, dtype=torch.long)
    idx[:, 16:48, 24:40] = torch.arange(n).view(n, 1, 1) * 3 % 200 + 40   # a moving "body" on the background
    return curve[idx]


def run(models, frames, steps=1, cfg=7.5, **kw):
    by_id = pack_nodes()
    model, encoder, control = models
    pose = by_id["MagicAnimatePoseControl"].execute(control, frames).result[0]
    appearance = Appearance(encoder, torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
    ctx = [[torch.zeros(1, 77, 32), {}]]
    out = by_id["MagicAnimateTemporalSample"].execute(model, appearance, pose, ctx, ctx, seed=1, steps=steps, cfg=cfg,
                                                      **kw)
    return out.result[0]["samples"]


def test_one_output_latent_per_pose_frame(models):
    for n in (1, 5, 42):
        assert run(models, viridis_frames(n)).shape == (n, 4, 8, 8)


def test_progress_counts_steps_times_windows_and_interrupt_leaves_models_usable(models):
    seen = []

    def hook(value, total, preview, node_id=None):
        seen.append((value, total))

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        run(models, viridis_frames(42), steps=2)   # 48 padded frames -> 4 windows per step
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert seen[-1] == (8, 8) and (1, 8) in seen

    def interrupting(value, total, preview, node_id=None):
        comfy.model_management.interrupt_current_processing(True)
        comfy.model_management.throw_exception_if_processing_interrupted()

    comfy.utils.set_progress_bar_global_hook(interrupting)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run(models, viridis_frames(42), steps=2)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        comfy.model_management.interrupt_current_processing(False)
    a = run(models, viridis_frames(5))
    b = run(models, viridis_frames(5))
    assert torch.equal(a, b)  # after an interruption the next run is normal and deterministic


def test_pose_control_warns_on_non_densepose_frames(models, caplog):
    with caplog.at_level(logging.WARNING, logger="MagicAnimate"):
        run(models, torch.zeros(3, 64, 64, 3))
    assert "not be DensePose" in caplog.text and "black" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="MagicAnimate"):
        run(models, viridis_frames(3))
    assert "DensePose" not in caplog.text


def test_cfg_1_and_independent_noise_and_open_segments_run(models):
    from magicanimate.comfy_adapter.context import SegmentOptions

    a = run(models, viridis_frames(20), cfg=1.0, noise_mode="independent",
            segments=SegmentOptions(8, 2, closed_loop=False, fuse="pyramid"))
    assert a.shape == (20, 4, 8, 8) and torch.isfinite(a).all()
