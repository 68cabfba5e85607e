"""TemporalSample: denoise the whole video with segment fusion; returns one latent per pose frame."""

from __future__ import annotations

import comfy.samplers
import torch

from ..magicanimate.comfy_adapter.animate import WindowProgress, animate
from ..magicanimate.comfy_adapter.context import SegmentOptions
from ..magicanimate.comfy_adapter.keys import TEMPORAL_INJECTIONS
from ..magicanimate.comfy_adapter.payloads import Appearance
from ..magicanimate.comfy_adapter.sampling import REFERENCE_SAMPLER, sampler_names
from ..magicanimate.errors import MagicAnimateError
from ..magicanimate.noise import NOISE_MODES
from ..magicanimate.pose_frames import frame_count
from .api import CATEGORY, AppearanceType, PoseType, SegmentsType, io, search_aliases
from .validation import check_widgets, refuse_invalid

#: The reference DDIM's "leading" timesteps with steps_offset 1 reach t = steps for steps > 500, and the schedule has
#: t = 0..999, so 999 is the most steps that work (as in diffusers' DDIMScheduler).
MAX_STEPS = 999


def _context_dim(patcher) -> int | None:
    config = getattr(getattr(getattr(patcher, "model", None), "model_config", None), "unet_config", None) or {}
    dim = config.get("context_dim")
    return int(dim) if dim is not None else None


def _check_inputs(model, appearance, positive, negative, steps: int) -> None:
    """Refuse inputs that would otherwise fail deep inside torch, with the input's name and the fix."""
    if int(steps) < 1:
        raise MagicAnimateError(f"TemporalSample: steps is {steps}; it must be at least 1 (the reference uses 25).")
    get_injections = getattr(model, "get_injections", None)
    if not callable(get_injections) or not get_injections(TEMPORAL_INJECTIONS):
        raise MagicAnimateError("TemporalSample: the model input is not a MagicAnimate temporal MODEL (it has no "
                                "motion modules). Connect the MODEL output of Load MagicAnimate, not a checkpoint "
                                "loader's MODEL.")
    want = _context_dim(model)
    encoder_dim = _context_dim(getattr(getattr(appearance, "encoder", None), "patcher", None))
    if want is not None and encoder_dim is not None and encoder_dim != want:
        raise MagicAnimateError(f"TemporalSample: the appearance encoder reads {encoder_dim}-wide text conditioning "
                                f"but the MODEL reads {want}-wide; load both from the same MagicAnimate release.")
    for name, conds in (("positive", positive), ("negative", negative)):
        if not conds:
            raise MagicAnimateError(f"TemporalSample: the {name} conditioning is empty; connect a CLIPTextEncode "
                                    "(an empty prompt is what the reference uses).")
        for cond in conds:
            ctx = cond[0] if isinstance(cond, (list, tuple)) and cond else None
            if not isinstance(ctx, torch.Tensor) or ctx.ndim != 3:
                raise MagicAnimateError(f"TemporalSample: the {name} input is not text conditioning; connect a "
                                        "CLIPTextEncode.")
            if want is not None and ctx.shape[-1] != want:
                raise MagicAnimateError(
                    f"TemporalSample: the {name} conditioning is {ctx.shape[-1]} wide but MagicAnimate (SD1.5) needs "
                    f"{want}; it comes from another model family's text encoder (e.g. SDXL). Encode the prompt with "
                    "the CLIP of an SD1.5 checkpoint (CheckpointLoaderSimple -> CLIPTextEncode).")


def _starting_latent(latent: dict | None, appearance: Appearance) -> torch.Tensor | None:
    """The optional LATENT input's samples ``(N, 4, h, w)`` as float32, refused unless at the appearance's size."""
    if latent is None:
        return None
    _, c, h, w = appearance.latent.shape
    start = latent["samples"].to(torch.float32)
    if start.ndim != 4 or start.shape[0] == 0 or start.shape[1] != c:
        raise MagicAnimateError(f"TemporalSample: latent has shape {tuple(start.shape)}; it must be an SD1.5 "
                                f"latent batch (N, {c}, {h}, {w}), e.g. from VAE Encode with an SD1.5 VAE.")
    if start.shape[-2:] != (h, w):
        raise MagicAnimateError(f"TemporalSample: latent is {start.shape[-1] * 8}x{start.shape[-2] * 8} but "
                                f"the appearance is {w * 8}x{h * 8}; make them the same size.")
    return start

class TemporalSample(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicAnimateTemporalSample", display_name="Temporal Sample (dance video)", category=CATEGORY,
            **search_aliases("MagicAnimateTemporalSample"),
            description="Animates the reference photo along the pose frames: denoises the whole video with the "
                        "temporal MODEL over overlapping segments (reference DDIM by default). Gives one latent per "
                        "pose frame: VAE Decode -> Create Video -> Save Video.",
            inputs=[
                io.Model.Input("model", tooltip="The temporal MODEL from Load MagicAnimate (not a plain SD1.5 "
                                                "MODEL)."),
                AppearanceType.Input("appearance", tooltip="From MagicAnimate Appearance Encode; its width x height "
                                                          "sets the video size in pixels."),
                PoseType.Input("pose", tooltip="From MagicAnimate Pose Control; one output frame per pose frame."),
                io.Conditioning.Input("positive", tooltip="Text conditioning from CLIPTextEncode with an SD1.5 CLIP; "
                                                          "the reference uses an empty prompt."),
                io.Conditioning.Input("negative", tooltip="Negative text conditioning for classifier-free guidance; "
                                                          "the reference uses an empty prompt."),
                io.Int.Input("seed", default=1, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the initial noise: the same seed and settings give the same video; "
                                     "the reference demos use 1."),
                io.Int.Input("steps", default=25, min=1, max=MAX_STEPS,
                             tooltip="Number of denoising steps; the reference uses 25. Time grows in proportion."),
                io.Float.Input("cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale (a factor): how strongly the video follows "
                                       "the reference appearance and prompt; 7.5 is the reference, 1 skips the "
                                       "unconditional pass (about twice as fast)."),
                io.Combo.Input("sampler_name", options=sampler_names(), default=REFERENCE_SAMPLER,
                               tooltip="reference_ddim reproduces the reference (DDIM, timesteps 961, 921, ..., 1); "
                                       "any ComfyUI sampler can be used instead."),
                io.Combo.Input("scheduler", options=list(comfy.samplers.KSampler.SCHEDULERS), default="normal",
                               tooltip="Noise schedule for the ComfyUI samplers (ignored by reference_ddim, which "
                                       "uses the reference's timesteps)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="0..1 fraction of the noise schedule to run: 1.0 starts from pure noise "
                                       "(the reference); lower values keep more of the optional latent input."),
                io.Combo.Input("noise_mode", options=list(NOISE_MODES), default="tiled",
                               tooltip="tiled: one segment-long (16-frame) noise clip repeated over the video (the "
                                       "reference); independent: fresh noise for every frame."),
                SegmentsType.Input("segments", optional=True,
                                   tooltip="Optional, from MagicAnimate Segment Fuse; unconnected: 16-frame "
                                           "segments, overlap 4, closed loop (the reference)."),
                io.Latent.Input("latent", optional=True,
                                tooltip="Optional starting latent video at the appearance's size, for denoise < 1; "
                                        "a shorter one is padded with its last frame."),
                io.Noise.Input("noise", optional=True,
                               tooltip="Optional NOISE source (e.g. Random Noise) used instead of seed/noise_mode."),
            ],
            outputs=[io.Latent.Output(display_name="LATENT")],
        )

    @classmethod
    def validate_inputs(cls, cfg=None, sampler_name=None, scheduler=None, denoise=None,
                        noise_mode=None) -> bool | str:
        return check_widgets(cls, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler, denoise=denoise,
                             noise_mode=noise_mode)

    @classmethod
    def execute(cls, model, appearance, pose, positive, negative, seed: int = 1, steps: int = 25, cfg: float = 7.5,
                sampler_name: str = REFERENCE_SAMPLER, scheduler: str = "normal", denoise: float = 1.0,
                noise_mode: str = "tiled", segments: SegmentOptions | None = None, latent=None,
                noise=None) -> io.NodeOutput:
        refuse_invalid(cls, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler,
                       denoise=denoise, noise_mode=noise_mode)
        if frame_count(pose.frames) == 0:
            raise MagicAnimateError("TemporalSample: the pose input has no frames; connect MagicAnimate Pose Control "
                                    "fed with at least one DensePose frame.")
        _check_inputs(model, appearance, positive, negative, steps)
        start = _starting_latent(latent, appearance)
        run = animate(model, appearance, pose, positive, negative, seed=seed, steps=steps, cfg=cfg,
                      sampler_name=sampler_name, scheduler=scheduler, denoise=denoise, noise_mode=noise_mode,
                      segments=segments, latent=start, noise=noise, progress=WindowProgress())
        return io.NodeOutput({"samples": run.latents})
