"""TemporalSample / PoseControl / SegmentFuse executed directly on tiny models (no server)."""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.utils
import pytest
import torch
from tiny_models import viridis_frames

from devtools.pack import pack_nodes
from magicanimate.comfy_adapter.payloads import Appearance


@pytest.fixture(scope="module")
def models(tiny_models):
    temporal, encoder, control = tiny_models
    return temporal.model, encoder, control


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
    """The options reach the run: open-loop windows (the last one does not wrap to frame 0), pyramid fusion, fresh
    noise per frame (not the tiled 8-frame clip), and a deterministic result."""
    import sys

    from devtools.pack import PACK_NAME

    pack_nodes()
    recorded_runs = sys.modules[f"{PACK_NAME}.magicanimate.comfy_adapter.animate"].recorded_runs  # the node's copy
    from magicanimate.comfy_adapter.context import SegmentOptions

    options = SegmentOptions(8, 2, closed_loop=False, fuse="pyramid")
    with recorded_runs() as runs:
        a = run(models, viridis_frames(20), cfg=1.0, noise_mode="independent", segments=options)
        again = run(models, viridis_frames(20), cfg=1.0, noise_mode="independent", segments=options)
        tiled = run(models, viridis_frames(20), cfg=1.0, noise_mode="tiled", segments=options)
    assert a.shape == (20, 4, 8, 8) and torch.isfinite(a).all()
    assert torch.equal(a, again) and not torch.allclose(a, tiled)
    # 20 frames padded to 24; open loop: the last window is 16..23, not 18..23 + 0, 1.
    assert runs[0].windows == [list(range(0, 8)), list(range(6, 14)), list(range(12, 20)), list(range(16, 24))]
    assert runs[0].state.segments.fuse == "pyramid" and runs[0].state.segments.closed_loop is False
