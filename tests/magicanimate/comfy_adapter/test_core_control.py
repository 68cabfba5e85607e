"""Core ControlNets (ControlNetApplyAdvanced, chained) beside Pose Control under the pack's segment windows, on
tiny random models: each window's hint frames once per frame per step, rows shared only where that is exact."""

from __future__ import annotations

import pytest
import torch
from tiny_models import hint_frames, temporal_sample, text

from devtools.random_weights.model_files import write_controlnet
from magicanimate.comfy_adapter.loaders import load_densepose_controlnet


def frame_ids(hint: torch.Tensor) -> list[int]:
    return [round(float(v) * 64) - 1 for v in hint[:, 0, 0, 0]]


@pytest.fixture(scope="module")
def core_controlnet(tmp_path_factory):
    """A second tiny ControlNet, loaded separately, standing for an OpenPose/depth ControlNet from core nodes."""
    root = tmp_path_factory.mktemp("core_cn")
    write_controlnet(root / "cn", dict(block_out_channels=(32, 64, 128, 128), cross_attention_dim=32), seed=7)
    return load_densepose_controlnet(str(root / "cn"), torch.float32)


@pytest.fixture(scope="module")
def core_controlnet_f64(tmp_path_factory):
    """The same core ControlNet computing in float64: its rows then round alike in any batch composition."""
    root = tmp_path_factory.mktemp("core_cn64")
    write_controlnet(root / "cn", dict(block_out_channels=(32, 64, 128, 128), cross_attention_dim=32), seed=7)
    return load_densepose_controlnet(str(root / "cn"), torch.float64)


def _core_chain(frames: int, core_controlnet) -> tuple[list, list]:
    """Two chained ControlNetApplyAdvanced: hint frames 0..F-1 (strength 1), then reversed (strength 0.5)."""
    import nodes as comfy_nodes

    pos, neg = comfy_nodes.ControlNetApplyAdvanced().apply_controlnet(text(0.5), text(), core_controlnet,
                                                                      hint_frames(frames), 1.0, 0.0, 1.0)
    return comfy_nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, core_controlnet,
                                                                  hint_frames(frames).flip(0), 0.5, 0.0, 1.0)


def _recorded_sample(tiny_models, core_controlnet, frames: int, steps: int) -> tuple[torch.Tensor, list, list]:
    """Temporal Sample with the core chain; returns the latents and each core ControlNet forward's
    ``(timestep, hint frame ids)``."""
    calls = []
    cm = core_controlnet.control_model
    original = cm.forward

    def recording(*args, hint=None, timesteps=None, **kwargs):
        calls.append((round(float(timesteps[0]), 3), frame_ids(hint)))
        return original(*args, hint=hint, timesteps=timesteps, **kwargs)

    cm.forward = recording
    try:
        pos, neg = _core_chain(frames, core_controlnet)
        latents = temporal_sample(tiny_models, frames, pos, neg, steps=steps)
    finally:
        del cm.forward
    return latents, calls, pos


def _core_control_module():
    import importlib

    from devtools.pack import load_pack

    return importlib.import_module(load_pack().__name__ + ".magicanimate.comfy_adapter.core_control")


def test_core_controlnet_gets_each_windows_hint_frames_once_per_frame_per_step(tiny_models, core_controlnet_f64,
                                                                               monkeypatch):
    """core ControlNetApplyAdvanced (chained) beside Pose Control, 3 overlapping windows, 2 steps: every core ControlNet
    forward sees hint frames of the window being denoised, each frame goes through each ControlNet once per step (per
    CFG half), and the latents are those of the per-window path (each window's frames all run in every window).

    The core ControlNet computes in float64 and hands float32 residuals to the UNet: in float32 the rows computed in a
    batch of 8 instead of 32 round differently on some CPUs (oneDNN picks kernels by batch size), which two sampler
    steps of the tiny random networks at cfg 7.5 amplify about 26-fold; in float64 the paths must agree exactly."""
    import comfy.controlnet

    core_controlnet = core_controlnet_f64
    merge = comfy.controlnet.ControlBase.control_merge
    monkeypatch.setattr(comfy.controlnet.ControlBase, "control_merge", lambda self, control, prev, output_dtype:
                        merge(self, control, prev, output_dtype or torch.float32))
    frames, steps = 32, 2  # windows 0..15, 12..27, 24..31 + 0..7
    step_controls = _core_control_module().StepControls
    kept = []  # frames whose rows are kept after each window (bounded memory: only those a later window needs)
    window_done = step_controls.window_done

    def recording_done(self, index_list):
        window_done(self, index_list)
        kept.append(sorted(self.rows))

    monkeypatch.setattr(step_controls, "window_done", recording_done)
    latents, calls, pos = _recorded_sample(tiny_models, core_controlnet, frames, steps)
    monkeypatch.setattr(step_controls, "window_done", window_done)
    assert kept == [list(range(8)) + list(range(12, 16)), list(range(8)) + list(range(24, 28)), []] * steps
    step_ts = list(dict.fromkeys(t for t, _ in calls))
    assert len(step_ts) == steps
    # Per window, only the frames no earlier window of this step computed: the chained (first) ControlNet, then the
    # second (reversed hint); cond and uncond rows batched together, as core batches them.
    new_frames = [list(range(16)), list(range(16, 28)), list(range(28, 32))]
    per_step = []
    for w in new_frames:
        per_step += [w + w, [frames - 1 - i for i in w] * 2]
    assert calls == [(t, ids) for t in step_ts for ids in per_step]
    for t in step_ts:  # each frame exactly once per step per CFG half, for each of the two ControlNets
        seen = sorted(i for tt, ids in calls if tt == t for i in ids)
        assert seen == sorted(list(range(frames)) * 4)
    # The user's control objects are left as they were (they are cached node outputs).
    control = pos[0][1]["control"]
    assert control.cond_hint_original.shape[0] == frames and control.previous_controlnet.cond_hint_original.shape[0] \
        == frames

    # Today's per-window path (kept for chains whose rows may depend on the whole batch): same latents.
    monkeypatch.setattr(_core_control_module(), "rows_are_independent", lambda control: False)
    per_window, window_calls, _ = _recorded_sample(tiny_models, core_controlnet, frames, steps)
    windows = [list(range(16)), list(range(12, 28)), list(range(24, 32)) + list(range(8))]
    expected = []
    for w in windows:
        expected += [w + w, [frames - 1 - i for i in w] * 2]
    assert window_calls == [(t, ids) for t in step_ts for ids in expected]
    # Bit-equal: both paths give the UNet the same float32 residuals (float64 ControlNet, see the docstring).
    torch.testing.assert_close(latents, per_window, rtol=0, atol=1e-6)


def test_core_controlnet_rows_are_shared_when_cond_and_uncond_run_apart(tiny_models, core_controlnet, monkeypatch):
    """Short of memory, core runs the CFG halves in separate calls (batched_number 1): each half still computes each
    frame once per step, with its own text rows (the cache is keyed by the cond's uuid)."""
    monkeypatch.setattr(tiny_models[0].model.model, "memory_required", lambda *args, **kwargs: float("inf"))
    frames = 32
    _, calls, _ = _recorded_sample(tiny_models, core_controlnet, frames, 1)
    assert all(len(set(ids)) == len(ids) for _, ids in calls)  # one CFG half per call
    assert sorted(len(ids) for _, ids in calls) == sorted([16, 12, 4] * 4)  # 3 windows x 2 halves x 2 ControlNets
    assert sorted(i for _, ids in calls for i in ids) == sorted(list(range(frames)) * 4)


def test_only_core_control_types_share_rows_across_windows(core_controlnet):
    """A control type the pack cannot reason about (another pack's ControlNet subclass, e.g. Advanced-ControlNet with
    latent keyframes indexing the batch) or a multi-frame extra concat keeps the per-window path, chained or not."""
    import comfy.controlnet

    core = _core_control_module()

    class OtherPacksControlNet(comfy.controlnet.ControlNet):
        pass

    plain = core_controlnet.copy()
    other = core_controlnet.copy()
    other.__class__ = OtherPacksControlNet
    chained = core_controlnet.copy().set_previous_controlnet(other)
    masked = core_controlnet.copy()
    masked.extra_concat_orig = [torch.ones(4, 1, 8, 8)]
    assert core.rows_are_independent(plain) and core.rows_are_independent(core_controlnet.copy()
                                                                           .set_previous_controlnet(plain))
    assert not core.rows_are_independent(other) and not core.rows_are_independent(chained)
    assert not core.rows_are_independent(masked)
    for control in (plain, other, chained):
        control.cond_hint_original = torch.zeros(5, 3, 8, 8)
    step = core.StepControls([[0, 1, 2, 3]], 5)
    assert type(core.resize_conds_controls([{"control": plain}], [0, 1, 2, 3], step)[0]["control"]) \
        is core.WindowRowsControl
    for control in (other, chained):
        per_window = core.resize_conds_controls([{"control": control}], [0, 1, 2, 3], step)[0]["control"]
        assert type(per_window) is type(control) and per_window.cond_hint_original.shape[0] == 4


def test_core_controlnet_hints_are_fitted_once_per_frame_per_run(tiny_models, core_controlnet, monkeypatch):
    """Core fits a hint to the latent size (resize, preprocess, cast) each time a ControlNet copy meets a new window:
    once per frame per step. The pack prepares each frame of each per-frame hint once per sampling run, and the run's
    prepared frames are dropped when it ends."""
    import comfy.utils

    core = _core_control_module()
    upscaled = []
    upscale = comfy.utils.common_upscale

    def counting(samples, *args, **kwargs):
        upscaled.append(samples.shape[0])
        return upscale(samples, *args, **kwargs)

    cleared = []
    clear = core.PreparedHints.clear

    def recording_clear(self):
        cleared.append(len(self))
        clear(self)

    monkeypatch.setattr(comfy.utils, "common_upscale", counting)
    monkeypatch.setattr(core.PreparedHints, "clear", recording_clear)
    frames, steps = 32, 2
    latents, calls, _ = _recorded_sample(tiny_models, core_controlnet, frames, steps)
    assert len(calls) == 3 * 2 * steps  # windows x chained ControlNets x steps: the ControlNets did run
    assert sum(upscaled) == 2 * frames  # two ControlNets, each hint frame once in the whole run (not once per step)
    assert cleared == [2 * frames]  # the run's prepared frames, dropped once at its end
