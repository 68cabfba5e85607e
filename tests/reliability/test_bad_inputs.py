"""Bad graph inputs through the nodes' own ``execute`` (in-process, tiny models, a random full-size VAE).

Every user mistake raises the pack's ``MagicAnimateError`` with a message naming the input and the fix; inputs that
can be handled (other sizes, RGBA, grayscale, one frame, cfg 1, ...) run.
"""

from __future__ import annotations

import logging
import sys
import time

import pytest
import torch
from comfy.patcher_extension import WrappersMP
from tiny_models import text_cond, viridis_frames

from devtools.pack import PACK_NAME, load_pack, pack_nodes
from devtools.proc_memory import peak_resident_bytes, reset_peak

FIX_WORDS = ("connect", "set ", "use ", "must", "make ", "expected", "encode", "load ")


@pytest.fixture(scope="module")
def nodes():
    load_pack()
    return pack_nodes()


@pytest.fixture(scope="module")
def models(tiny_files):
    pack = load_pack()
    loaders = sys.modules[f"{PACK_NAME}.magicanimate.comfy_adapter.loaders"]
    temporal = loaders.load_temporal_model(str(tiny_files.temporal), torch.float32)
    encoder = loaders.load_appearance_encoder(str(tiny_files.appearance), torch.float32)
    control = loaders.load_densepose_controlnet(str(tiny_files.controlnet), torch.float32)
    assert pack is not None
    return temporal.model, encoder, control


def _errors():
    return sys.modules[f"{PACK_NAME}.magicanimate.errors"]


def refused(log, bad_input: str, fn, *phrases: str) -> str:
    """Call ``fn``; it must raise the pack's MagicAnimateError whose message has ``phrases`` and a fix."""
    with pytest.raises(Exception) as info:
        fn()
    err = info.value
    assert isinstance(err, _errors().MagicAnimateError), f"{type(err).__name__}: {err}"
    message = str(err)
    log("graph", bad_input, message)
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    assert any(w in message.lower() for w in FIX_WORDS), f"no fix in: {message}"
    return message


def reference(nodes, models, vae, image, width=64, height=64, fit="stretch"):
    return nodes["MagicAnimateAppearanceEncode"].execute(models[1], vae, image, fit=fit, width=width,
                                                         height=height).result[0]


def pose_of(nodes, models, frames, **kw):
    return nodes["MagicAnimatePoseControl"].execute(models[2], frames, **kw).result[0]


def appearance_latent(models, size=8, seed=0):
    cls = sys.modules[f"{PACK_NAME}.magicanimate.comfy_adapter.payloads"].Appearance
    return cls(models[1], torch.randn(1, 4, size, size, generator=torch.Generator().manual_seed(seed)))


def sample(nodes, models, appearance, pose, steps=1, cfg=7.5, positive=None, negative=None, model=None, **kw):
    positive = text_cond() if positive is None else positive
    negative = text_cond() if negative is None else negative
    out = nodes["MagicAnimateTemporalSample"].execute(model or models[0], appearance, pose, positive, negative,
                                                      seed=1, steps=steps, cfg=cfg, **kw)
    return out.result[0]["samples"]


# ---------------------------------------------------------------------------------------------------------------------
# Sizes, frame counts, channels
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fit", ["stretch", "pad", "crop"])
def test_reference_and_pose_of_different_sizes_are_fitted(nodes, models, random_vae, fit, bad_input_log):
    image = torch.rand(1, 80, 96, 3)  # a 96x80 reference, 64x64 video, 48x80 (portrait) pose frames
    appearance = reference(nodes, models, random_vae, image, fit=fit)
    assert appearance.latent.shape == (1, 4, 8, 8)
    out = sample(nodes, models, appearance, pose_of(nodes, models, viridis_frames(3, 80, 48), fit=fit), cfg=1.0)
    assert out.shape == (3, 4, 8, 8) and torch.isfinite(out).all()
    bad_input_log("graph", f"reference 96x80 and pose 48x80 for a 64x64 video (fit={fit})",
                  f"runs: both are fitted to 64x64 by {fit}", outcome="handled")


def test_reference_of_odd_size_and_video_size_not_multiple_of_8(nodes, models, random_vae, bad_input_log):
    appearance = reference(nodes, models, random_vae, torch.rand(1, 45, 67, 3))  # odd-sized reference: fitted
    assert appearance.latent.shape == (1, 4, 8, 8)
    bad_input_log("graph", "reference image 67x45 (odd size)", "runs: fitted to the video size", outcome="handled")
    refused(bad_input_log, "AppearanceEncode width 100 (not a multiple of 8)",
            lambda: reference(nodes, models, random_vae, torch.rand(1, 64, 64, 3), width=100), "100x64",
            "multiples of 8")


def test_rgba_and_grayscale_references_equal_their_rgb(nodes, models, random_vae, bad_input_log):
    rgb = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(3))
    rgba = torch.cat([rgb, torch.rand(1, 64, 64, 1)], dim=-1)
    gray = rgb.mean(dim=-1, keepdim=True)
    base = reference(nodes, models, random_vae, rgb).latent
    assert torch.equal(reference(nodes, models, random_vae, rgba).latent, base)
    assert torch.equal(reference(nodes, models, random_vae, gray).latent,
                       reference(nodes, models, random_vae, gray.expand(-1, -1, -1, 3)).latent)
    bad_input_log("graph", "RGBA reference (4 channels)", "runs: alpha is dropped", outcome="handled")
    bad_input_log("graph", "grayscale reference (1 channel)", "runs: gray is repeated to RGB", outcome="handled")
    refused(bad_input_log, "reference IMAGE with 2 channels",
            lambda: reference(nodes, models, random_vae, torch.rand(1, 64, 64, 2)), "image input", "(1, 64, 64, 2)")
    refused(bad_input_log, "empty reference IMAGE batch",
            lambda: reference(nodes, models, random_vae, torch.rand(0, 64, 64, 3)), "image input is empty")


def test_rgba_and_grayscale_pose_frames_run(nodes, models):
    frames = viridis_frames(2)
    a = sample(nodes, models, appearance_latent(models), pose_of(nodes, models, frames), cfg=1.0)
    rgba = pose_of(nodes, models, torch.cat([frames, torch.ones(2, 64, 64, 1)], dim=-1))
    assert torch.equal(sample(nodes, models, appearance_latent(models), rgba, cfg=1.0), a)
    gray = pose_of(nodes, models, frames.mean(dim=-1, keepdim=True))
    assert sample(nodes, models, appearance_latent(models), gray, cfg=1.0).shape == (2, 4, 8, 8)


def test_zero_one_and_fifty_frames(nodes, models, bad_input_log):
    refused(bad_input_log, "zero pose frames (PoseControl)",
            lambda: pose_of(nodes, models, torch.zeros(0, 64, 64, 3)), "pose_frames is empty")
    pose_cls = sys.modules[f"{PACK_NAME}.magicanimate.comfy_adapter.payloads"].PoseCondition
    empty = pose_cls(control_net=models[2], frames=torch.zeros(0, 64, 64, 3))
    refused(bad_input_log, "zero pose frames (TemporalSample)",
            lambda: sample(nodes, models, appearance_latent(models), empty), "has no frames")
    refused(bad_input_log, "pose_frames with 5 channels",
            lambda: pose_of(nodes, models, torch.rand(2, 64, 64, 5)), "pose_frames has shape (2, 64, 64, 5)")
    one = sample(nodes, models, appearance_latent(models), pose_of(nodes, models, viridis_frames(1)))
    assert one.shape == (1, 4, 8, 8) and torch.isfinite(one).all()
    bad_input_log("graph", "one pose frame", "runs: one output latent", outcome="handled")
    started = time.monotonic()
    two_seconds = sample(nodes, models, appearance_latent(models), pose_of(nodes, models, viridis_frames(50)),
                         cfg=1.0)
    assert two_seconds.shape == (50, 4, 8, 8) and torch.isfinite(two_seconds).all()
    bad_input_log("graph", "2-second request (50 frames at 25 fps)",
                  f"runs: 50 output latents ({time.monotonic() - started:.0f} s at 64x64, 1 step, tiny models)",
                  outcome="handled")


def test_pose_frames_that_are_not_densepose_warn(nodes, models, caplog, bad_input_log):
    with caplog.at_level(logging.WARNING, logger="MagicAnimate"):
        frames = torch.ones(3, 64, 64, 3)
        frames[:, 16:48, 24:40] = 0.1  # a dark figure on white: an OpenPose/segmentation-style render
        pose_of(nodes, models, frames)
    warning = [r.getMessage() for r in caplog.records if "DensePose" in r.getMessage()]
    assert warning and "white" in warning[0], caplog.text
    bad_input_log("graph", "pose frames that are not DensePose (white background)", warning[0], outcome="warning")


# ---------------------------------------------------------------------------------------------------------------------
# Sampler settings
# ---------------------------------------------------------------------------------------------------------------------


def test_steps_zero_is_refused(nodes, models, bad_input_log):
    refused(bad_input_log, "steps 0", lambda: sample(nodes, models, appearance_latent(models),
                                                     pose_of(nodes, models, viridis_frames(2)), steps=0),
            "steps is 0", "at least 1")


def test_cfg_1_runs_no_unconditional_pass(nodes, models, bad_input_log):
    seen: list[list[int]] = []

    def record(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        seen.append(list(transformer_options.get("cond_or_uncond") or []))
        return executor(x, timesteps, context, y, control, transformer_options, **kwargs)

    model = models[0].clone()
    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "reliability_probe", record)
    pose = pose_of(nodes, models, viridis_frames(20))
    sample(nodes, models, appearance_latent(models), pose, steps=2, cfg=1.0, model=model)
    assert seen and all(rows == [0] for rows in seen), seen   # only conditional rows, every window, every step
    seen.clear()
    sample(nodes, models, appearance_latent(models), pose, steps=1, cfg=7.5, model=model)
    assert seen and all(sorted(rows) == [0, 1] for rows in seen), seen
    bad_input_log("graph", "cfg 1", "runs: conditional pass only (no unconditional UNet rows)", outcome="handled")


def test_denoise_zero(nodes, models, bad_input_log):
    pose = pose_of(nodes, models, viridis_frames(3))
    refused(bad_input_log, "denoise 0 without a latent",
            lambda: sample(nodes, models, appearance_latent(models), pose, denoise=0.0), "denoise 0.0",
            "no step to run")
    start = torch.randn(3, 4, 8, 8)
    out = sample(nodes, models, appearance_latent(models), pose, denoise=0.0, latent={"samples": start})
    assert torch.equal(out, start)
    bad_input_log("graph", "denoise 0 with a latent", "runs: the latent passes through unchanged (as core KSampler)",
                  outcome="handled")


def test_wrong_models_conditioning_and_latents_are_refused(nodes, models, bad_input_log):
    pose = pose_of(nodes, models, viridis_frames(2))
    appearance = appearance_latent(models)
    base = models[1].patcher  # an SD1.5 UNet without motion modules
    refused(bad_input_log, "TemporalSample model = a plain SD1.5 MODEL",
            lambda: sample(nodes, models, appearance, pose, model=base), "not a MagicAnimate temporal MODEL",
            "Load MagicAnimate")
    refused(bad_input_log, "positive conditioning from an SDXL text encoder (2048 wide)",
            lambda: sample(nodes, models, appearance, pose, positive=text_cond(2048)), "positive conditioning is 2048",
            "SD1.5")
    refused(bad_input_log, "empty negative conditioning",
            lambda: sample(nodes, models, appearance, pose, negative=[]), "negative conditioning is empty")
    refused(bad_input_log, "latent of another size (128x128 for a 64x64 video)",
            lambda: sample(nodes, models, appearance, pose, latent={"samples": torch.zeros(2, 4, 16, 16)}),
            "128x128", "64x64")
    refused(bad_input_log, "latent with 16 channels (SD3/Flux latent)",
            lambda: sample(nodes, models, appearance, pose, latent={"samples": torch.zeros(2, 16, 8, 8)}),
            "(2, 16, 8, 8)", "SD1.5 VAE")
    refused(bad_input_log, "PoseControl end_percent before start_percent",
            lambda: pose_of(nodes, models, viridis_frames(2), start_percent=0.8, end_percent=0.2), "end_percent")
    refused(bad_input_log, "SegmentFuse overlap >= length",
            lambda: nodes["MagicAnimateSegmentFuse"].execute(length=8, overlap=8), "overlap must be")


# ---------------------------------------------------------------------------------------------------------------------
# Long videos
# ---------------------------------------------------------------------------------------------------------------------


def test_10000_frames_that_cannot_fit_are_refused_up_front(nodes, models, monkeypatch, bad_input_log):
    ram_check = sys.modules[f"{PACK_NAME}.magicanimate.ram_check"]
    pose = pose_of(nodes, models, viridis_frames(10_000, expand=True))   # a view: no memory
    appearance = appearance_latent(models, size=64)                       # a 512x512 video
    monkeypatch.setattr(ram_check, "available_ram_bytes", lambda: 16 * 10**9)
    started = time.monotonic()
    message = refused(bad_input_log, "10,000-frame request at 512x512 (16 GB of RAM available)",
                      lambda: sample(nodes, models, appearance, pose), "10000 frames at 512x512", "need about",
                      "GB of RAM", "only 16.0 GB is available", "at most about", "fewer frames")
    assert time.monotonic() - started < 5, "the refusal must come before any work"
    assert "decoded output frames 31.5 GB" in message and "ControlNet hints 31.5 GB" in message, message
    monkeypatch.undo()
    huge = appearance_latent(models, size=512)                            # 4096x4096: no machine has the RAM
    refused(bad_input_log, "10,000-frame request at 4096x4096 (this machine's RAM)",
            lambda: sample(nodes, models, huge, pose), "10000 frames at 4096x4096", "TB of RAM")


def test_10000_frames_that_fit_are_streamed_window_by_window(nodes, models, bad_input_log):
    """At 64x64 the run fits: it starts at once and holds ControlNet residuals for at most two windows."""
    import comfy.model_management
    import comfy.utils

    animate = sys.modules[f"{PACK_NAME}.magicanimate.comfy_adapter.animate"]
    windows, cached = [], []

    def hook(value, total, preview, node_id=None):
        windows.append((value, total))
        cached.append(len(runs[-1].state.control_cache))
        if len(windows) == 4:
            comfy.model_management.interrupt_current_processing(True)
        comfy.model_management.throw_exception_if_processing_interrupted()

    pose = pose_of(nodes, models, viridis_frames(10_000, expand=True))
    comfy.utils.set_progress_bar_global_hook(hook)
    started = time.monotonic()
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException), animate.recorded_runs() as runs:
            sample(nodes, models, appearance_latent(models), pose, cfg=1.0)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        comfy.model_management.interrupt_current_processing(False)
    elapsed = time.monotonic() - started
    assert windows[0] == (1, 834), windows        # 10,000 frames -> 834 windows of 16 frames every 12
    assert max(cached) <= 32, cached              # residuals of at most two windows' frames are alive
    state = runs[-1].state
    assert state.hints is None and state.control_cache == {} and state.bank == {}
    bad_input_log("graph", "10,000-frame request at 64x64 (fits)",
                  f"runs: 834 windows one after another (first windows after {elapsed:.0f} s; interrupted by the test)",
                  outcome="handled")


# ---------------------------------------------------------------------------------------------------------------------
# Non-finite values and extreme aspect ratios
# ---------------------------------------------------------------------------------------------------------------------


def test_nan_during_sampling_stops_the_run_naming_the_step(nodes, models, bad_input_log):
    appearance = appearance_latent(models)
    appearance.latent[0, :, 2:4, 2:4] = float("nan")   # e.g. an overflowed fp16 encode: NaN reaches the UNet
    pose = pose_of(nodes, models, viridis_frames(2))
    message = refused(bad_input_log, "NaN reaching the latents during sampling (reference latent with NaN)",
                      lambda: sample(nodes, models, appearance, pose, steps=2), "NaN/Inf at step 1 of 2",
                      "weight_dtype")
    assert "black video" in message


def test_crop_of_an_extreme_aspect_ratio_allocates_only_the_output(nodes, models, random_vae, bad_input_log):
    strip = torch.rand(1, 2, 40_000, 3)                 # scaling this to cover 64x64 first would take 1.2 GB
    before = reset_peak()
    appearance = reference(nodes, models, random_vae, strip, fit="crop")
    grown_mb = (peak_resident_bytes() - before) / 2**20
    assert appearance.latent.shape == (1, 4, 8, 8) and torch.isfinite(appearance.latent).all()
    assert grown_mb < 500, grown_mb
    bad_input_log("graph", "reference image 40000x2 with fit=crop", "runs: only the kept region is resampled",
                  outcome="handled")


def test_declared_widget_maxima_work(nodes, models, bad_input_log):
    """seed, steps, cfg, strength, segment length and overlap at their declared maxima (read from the schemas)."""
    schedule = sys.modules[f"{PACK_NAME}.magicanimate.comfy_adapter.sampling"]
    maxima = {}
    for node_id in ("MagicAnimateTemporalSample", "MagicAnimatePoseControl", "MagicAnimateSegmentFuse"):
        for inp in nodes[node_id].define_schema().inputs:
            if getattr(inp, "max", None) is not None:
                maxima[inp.id] = inp.max
    for sampler in ("reference_ddim", "euler", "dpmpp_2m"):
        sigmas = schedule.video_sigmas(models[0], sampler, "normal", maxima["steps"], 1.0)
        assert len(sigmas) == maxima["steps"] + 1 and torch.isfinite(sigmas).all(), sampler
        assert (sigmas[1:] < sigmas[:-1]).all(), sampler
    segments = nodes["MagicAnimateSegmentFuse"].execute(length=maxima["length"], overlap=maxima["overlap"],
                                                        closed_loop=True, fuse="pyramid").result[0]
    pose = pose_of(nodes, models, viridis_frames(maxima["length"] + 1), strength=maxima["strength"])
    out = nodes["MagicAnimateTemporalSample"].execute(
        models[0], appearance_latent(models), pose, text_cond(), text_cond(), seed=maxima["seed"], steps=1,
        cfg=maxima["cfg"], sampler_name="euler_ancestral", noise_mode="independent",
        segments=segments).result[0]["samples"]
    assert out.shape == (maxima["length"] + 1, 4, 8, 8) and torch.isfinite(out).all()
    bad_input_log("graph", f"declared maxima: seed 2^64-1, steps {maxima['steps']}, cfg {maxima['cfg']}, strength "
                  f"{maxima['strength']}, segment length {maxima['length']} / overlap {maxima['overlap']}",
                  "runs (steps 1000 was lowered to 999: the reference DDIM's timestep 1000 does not exist)",
                  outcome="handled")
