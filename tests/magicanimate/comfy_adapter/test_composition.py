"""The MagicAnimate MODEL composed with core ComfyUI nodes, on tiny random models.

Each test is one row of the README table "Composing with core nodes".
"""

from __future__ import annotations

import pytest
import torch

from devtools.pack import pack_nodes
from devtools.random_weights.model_files import write_controlnet
from magicanimate.comfy_adapter.loaders import load_densepose_controlnet
from magicanimate.comfy_adapter.payloads import Appearance

SIZE = 32  # pixels; latent 4x4


def text(value: float = 0.0) -> list:
    return [[torch.full((1, 77, 32), value), {}]]


def hint_frames(n: int) -> torch.Tensor:
    """IMAGE batch ``(n, SIZE, SIZE, 3)`` whose frame i is the constant (i + 1) / 64: frame ids survive resizing."""
    return (torch.arange(n, dtype=torch.float32) + 1).div(64).view(n, 1, 1, 1).expand(n, SIZE, SIZE, 3).contiguous()


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


def temporal_sample(tiny_models, frames: int, positive=None, negative=None, appearance=True, pose=True, model=None,
                    steps: int = 1, cfg: float = 7.5, **kw) -> torch.Tensor:
    by_id = pack_nodes()
    temporal, encoder, control = tiny_models
    model = model if model is not None else temporal.model
    pose_cond = by_id["MagicAnimatePoseControl"].execute(control, hint_frames(frames)).result[0]
    if not pose:
        pose_cond.strength = 0.0
    latent = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(0))
    app = Appearance(encoder, latent) if appearance else None
    out = by_id["MagicAnimateTemporalSample"].execute(model, app, pose_cond, positive or text(0.5), negative or text(),
                                                      seed=1, steps=steps, cfg=cfg, **kw)
    return out.result[0]["samples"]


def sample_without_node(tiny_models, frames: int, model, appearance: bool, size: int = 128) -> torch.Tensor:
    """One reference-DDIM step through apply_conditioning + sample_video (the node requires an appearance).

    128 pixels: the tiny UNet's middle block then has 2x2 tokens (with one token, self-attention is the identity).
    """
    from magicanimate.comfy_adapter.conditioning import apply_conditioning
    from magicanimate.comfy_adapter.payloads import PoseCondition
    from magicanimate.comfy_adapter.sampling import initial_noise, sample_video

    _, encoder, control = tiny_models
    latent = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    app = Appearance(encoder, latent) if appearance else None
    patched, _ = apply_conditioning(model, app, PoseCondition(control, hint_frames(frames)))
    start = torch.zeros(frames, 4, size // 8, size // 8)
    return sample_video(patched, text(0.5), text(), start, initial_noise(1, start, "tiled"), 1, 1, 7.5)


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


# --- attention patches: PerturbedAttentionGuidance, SelfAttentionGuidance -------------------------------------------

def pag_by_hand(model, scale: float):
    """PAG's definition, installed without its node: an extra conditional pass whose middle self-attention is the
    identity (``v``), on the exact 3-part key of that block, then ``cfg + (cond - perturbed) * scale``."""
    import comfy.model_patcher
    import comfy.samplers

    m = model.clone()

    def post_cfg(args):
        options = comfy.model_patcher.set_model_options_patch_replace(
            args["model_options"].copy(), lambda q, k, v, extra: v, "attn1", "middle", 0, 0)
        (perturbed,) = comfy.samplers.calc_cond_batch(args["model"], [args["cond"]], args["input"], args["sigma"],
                                                      options)
        return args["denoised"] + (args["cond_denoised"] - perturbed) * scale

    m.set_model_sampler_post_cfg_function(post_cfg)
    return m


@pytest.mark.parametrize("appearance", [True, False])
def test_perturbed_attention_guidance_acts_on_the_magicanimate_model(tiny_models, appearance):
    from comfy_extras.nodes_pag import PerturbedAttentionGuidance

    model = tiny_models[0].model
    plain = sample_without_node(tiny_models, 1, model, appearance)
    pag = sample_without_node(tiny_models, 1, PerturbedAttentionGuidance.execute(model, 3.0).result[0], appearance)
    by_hand = sample_without_node(tiny_models, 1, pag_by_hand(model, 3.0), appearance)
    assert (pag - plain).abs().max() > 1e-3          # PAG does something ...
    torch.testing.assert_close(pag, by_hand, rtol=1e-4, atol=1e-5)  # ... and exactly what it does on a plain UNet


def test_self_attention_guidance_runs_and_its_term_does_not_depend_on_the_appearance(tiny_models):
    """SAG records the unconditional middle attention; MagicAnimate leaves unconditional rows plain, so SAG's added term
    is the same with and without the appearance (and its recording replace is not lost: no AttributeError)."""
    from comfy_extras.nodes_sag import SelfAttentionGuidance

    model = tiny_models[0].model
    sag = SelfAttentionGuidance.execute(model, 0.8, 2.0).result[0]
    with_app = [sample_without_node(tiny_models, 1, m, True) for m in (model, sag)]
    without = [sample_without_node(tiny_models, 1, m, False) for m in (model, sag)]
    term_with, term_without = with_app[1] - with_app[0], without[1] - without[0]
    assert term_with.abs().max() > 1e-3
    assert (with_app[0] - without[0]).abs().max() > 1e-3  # the appearance itself matters
    torch.testing.assert_close(term_with, term_without, rtol=1e-4, atol=1e-5)


def test_self_attention_guidance_with_several_windows_is_refused_up_front(tiny_models):
    from comfy_extras.nodes_sag import SelfAttentionGuidance

    sag = SelfAttentionGuidance.execute(tiny_models[0].model, 0.8, 2.0).result[0]
    with pytest.raises(Exception, match=r"TemporalSample: Self-Attention Guidance.*3 windows") as error:
        temporal_sample(tiny_models, 17, model=sag)  # padded to 32 frames: 3 windows
    assert type(error.value).__name__ == "MagicAnimateError"  # the pack's own class (loaded under another name)


# --- nothing silently replaced: schedule patches, core context windows, core samplers ------------------------------

class FakeServer:
    """Stands for PromptServer.instance: collects the text shown on nodes."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def send_progress_text(self, text, node_id, sid=None) -> None:
        # The random hint frames here are not viridis DensePose: Pose Control's own colour-map warning (tested in
        # tests/nodes/test_node_help_and_ui_warning.py) is not what these tests look at.
        if not text.startswith("PoseControl warning:"):
            self.texts.append((str(node_id), text))


@pytest.fixture
def ui(monkeypatch):
    import server
    from comfy_execution.utils import CurrentNodeContext

    fake = FakeServer()
    monkeypatch.setattr(server.PromptServer, "instance", fake, raising=False)
    with CurrentNodeContext("prompt", "42"):
        yield fake


def ksampler(model, frames: int = 2):
    import nodes as comfy_nodes

    latent = {"samples": torch.zeros(frames, 4, SIZE // 8, SIZE // 8)}
    return comfy_nodes.common_ksampler(model, 1, 1, 1.0, "euler", "normal", text(0.5), text(), latent)[0]["samples"]


def test_model_sampling_discrete_after_the_loader_warns_in_the_ui(tiny_models, ui):
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete

    model = tiny_models[0].model
    temporal_sample(tiny_models, 2, model=model)
    assert ui.texts == []  # the MagicAnimate schedule as loaded: no word
    temporal_sample(tiny_models, 2, model=ModelSamplingDiscrete().patch(model, "eps", False)[0])
    assert len(ui.texts) == 1
    node, message = ui.texts[0]
    assert node == "42" and "ModelSamplingDiscrete" in message and "25.15 -> 14.61" in message


def test_core_context_window_node_is_refused_by_temporal_sample_and_core_samplers(tiny_models):
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode

    # Every input at the node's own default (newer ComfyUI versions add inputs), the windows as the reference's.
    inputs = {i.id: getattr(i, "default", None) for i in ContextWindowsManualNode.define_schema().inputs}
    inputs.update(model=tiny_models[0].model, context_length=16, context_overlap=4, context_schedule="standard_static",
                  context_stride=1, closed_loop=False, fuse_method="pyramid", dim=0)
    model = ContextWindowsManualNode.execute(**inputs).result[0]
    with pytest.raises(Exception, match="TemporalSample: a core context-window node.*Segment Fuse") as error:
        temporal_sample(tiny_models, 2, model=model)
    assert type(error.value).__name__ == "MagicAnimateError"
    with pytest.raises(Exception, match="KSampler: a core context-window node") as error:
        ksampler(model, 20)
    assert type(error.value).__name__ == "MagicAnimateError"  # not core's size-mismatch error


def test_core_ksampler_on_the_magicanimate_model_warns_in_the_ui(tiny_models, ui):
    out = ksampler(tiny_models[0].model)
    assert out.shape == (2, 4, SIZE // 8, SIZE // 8) and torch.isfinite(out).all()
    assert len(ui.texts) == 1 and "without the appearance and the pose" in ui.texts[0][1]


# --- patches that compose as they are: FreeU_V2, ToMe, SD1.5 LoRA -----------------------------------------------

def test_freeu_v2_and_tome_change_the_video(tiny_models):
    from comfy_extras.nodes_freelunch import FreeU_V2
    from comfy_extras.nodes_tomesd import TomePatchModel

    model = tiny_models[0].model
    # 128 pixels: FreeU normalises by a max-min over space, NaN on the 1x1 deepest level of a smaller latent.
    plain = sample_without_node(tiny_models, 1, model, True)
    for patched in (FreeU_V2().patch(model, 1.3, 1.4, 0.9, 0.2)[0], TomePatchModel.execute(model, 0.5).result[0]):
        out = sample_without_node(tiny_models, 1, patched, True)
        assert torch.isfinite(out).all() and (out - plain).abs().max() > 1e-3


def test_sd15_lora_loads_onto_the_magicanimate_model(tiny_models):
    import comfy.sd

    model = tiny_models[0].model
    g = torch.Generator().manual_seed(3)
    lora = {}
    for block in ("down_blocks_0_attentions_0", "up_blocks_3_attentions_2"):
        name = f"lora_unet_{block}_transformer_blocks_0_attn1_to_q"
        lora[f"{name}.lora_up.weight"] = torch.randn(32, 4, generator=g)
        lora[f"{name}.lora_down.weight"] = torch.randn(4, 32, generator=g)
    patched, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)
    assert len(patched.patches) == 2
    plain = temporal_sample(tiny_models, 2, model=model)
    assert (temporal_sample(tiny_models, 2, model=patched) - plain).abs().max() > 1e-3
