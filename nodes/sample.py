"""TemporalSample: denoise the whole video with segment fusion; returns one latent per pose frame."""

from __future__ import annotations

import dataclasses

import comfy.model_management
import comfy.samplers
import comfy.utils
import latent_preview
import torch

from ..magicanimate.comfy_adapter.conditioning import apply_conditioning
from ..magicanimate.comfy_adapter.context import SegmentOptions
from ..magicanimate.comfy_adapter.sampling import (
    REFERENCE_SAMPLER,
    initial_noise,
    sample_video,
    sampler_names,
    video_sigmas,
)
from ..magicanimate.errors import MagicAnimateError
from ..magicanimate.frames import fit_images
from ..magicanimate.noise import NOISE_MODES
from ..magicanimate.windows import padded_length
from .api import CATEGORY, AppearanceType, PoseType, SegmentsType, io


class _WindowProgress:
    """One progress bar over steps x windows; a latent preview of the first frame after every step."""

    def __init__(self, windows_per_step: int) -> None:
        self.per_step = max(1, windows_per_step)
        self.done = 0
        self.total = self.per_step
        self.bar = None
        self.previewer = None

    def start(self, steps: int, model) -> None:
        self.total = max(1, steps) * self.per_step
        self.bar = comfy.utils.ProgressBar(self.total)
        self.previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)

    def window_done(self) -> None:
        self.done = min(self.done + 1, self.total)
        if self.bar is not None:
            self.bar.update_absolute(self.done, self.total)

    def step_done(self, step: int, x0, x, total_steps: int) -> None:
        self.done = min((step + 1) * self.per_step, self.total)
        preview = None
        if self.previewer is not None:
            preview = self.previewer.decode_latent_to_preview_image("JPEG", x0[:1])
        if self.bar is not None:
            self.bar.update_absolute(self.done, self.total, preview)


class TemporalSample(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicAnimateTemporalSample", display_name="MagicAnimate Temporal Sample", category=CATEGORY,
            description="Animates the reference with the pose frames: reference DDIM over overlapping segments.",
            inputs=[
                io.Model.Input("model", tooltip="Temporal MODEL from Load MagicAnimate."),
                AppearanceType.Input("appearance", tooltip="From MagicAnimate Appearance Encode; sets the video size."),
                PoseType.Input("pose", tooltip="From MagicAnimate Pose Control; one output frame per pose frame."),
                io.Conditioning.Input("positive", tooltip="Text conditioning; the reference uses an empty prompt."),
                io.Conditioning.Input("negative", tooltip="Negative text conditioning; the reference uses an empty "
                                                          "prompt."),
                io.Int.Input("seed", default=1, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the initial noise; the reference demos use 1."),
                io.Int.Input("steps", default=25, min=1, max=1000, tooltip="Denoising steps; the reference uses 25."),
                io.Float.Input("cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale (strength of the reference appearance); "
                                       "7.5 is the reference, 1 skips the unconditional pass."),
                io.Combo.Input("sampler_name", options=sampler_names(), default=REFERENCE_SAMPLER,
                               tooltip="reference_ddim reproduces the reference (timesteps 961, 921, ..., 1); any "
                                       "ComfyUI sampler can be used instead."),
                io.Combo.Input("scheduler", options=list(comfy.samplers.KSampler.SCHEDULERS), default="normal",
                               tooltip="Sigma schedule for ComfyUI samplers (ignored by reference_ddim)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the schedule to run; 1.0 starts from pure noise."),
                io.Combo.Input("noise_mode", options=list(NOISE_MODES), default="tiled",
                               tooltip="tiled: one 16-frame noise clip repeated over the video (the reference); "
                                       "independent: fresh noise for every frame."),
                SegmentsType.Input("segments", optional=True,
                                   tooltip="From MagicAnimate Segment Fuse; default 16 frames, overlap 4, loop."),
                io.Latent.Input("latent", optional=True,
                                tooltip="Optional starting latent video (for denoise < 1)."),
                io.Noise.Input("noise", optional=True, tooltip="Optional NOISE source replacing seed/noise_mode."),
            ],
            outputs=[io.Latent.Output(display_name="LATENT")],
        )

    @classmethod
    def execute(cls, model, appearance, pose, positive, negative, seed: int = 1, steps: int = 25, cfg: float = 7.5,
                sampler_name: str = REFERENCE_SAMPLER, scheduler: str = "normal", denoise: float = 1.0,
                noise_mode: str = "tiled", segments: SegmentOptions | None = None, latent=None,
                noise=None) -> io.NodeOutput:
        segments = segments or SegmentOptions()
        frames = int(pose.frames.shape[0])
        if frames == 0:
            raise MagicAnimateError("TemporalSample: the pose input has no frames.")
        _, c, h, w = appearance.latent.shape
        pose = dataclasses.replace(pose, frames=fit_images(pose.frames, w * 8, h * 8, pose.fit))
        total = padded_length(frames, segments.length)  # edge-padded like the reference, cropped at the end
        if latent is not None:
            start = latent["samples"].to(torch.float32)
            if start.shape[-2:] != (h, w):
                raise MagicAnimateError(f"TemporalSample: latent is {start.shape[-1] * 8}x{start.shape[-2] * 8} but "
                                        f"the appearance is {w * 8}x{h * 8}; make them the same size.")
            start = torch.cat([start, start[-1:].expand(max(0, total - start.shape[0]), -1, -1, -1)])[:total]
        else:
            start = torch.zeros(total, c, h, w)
        if noise is not None:
            eps = noise.generate_noise({"samples": start})
        else:
            eps = initial_noise(seed, start, noise_mode, period=segments.length)
        progress = _WindowProgress(len(segments.windows(total)) if total > segments.length else 1)
        patched, _state = apply_conditioning(model, appearance, pose, segments, on_window=progress.window_done)
        sigmas = video_sigmas(patched, sampler_name, scheduler, steps, denoise)
        progress.start(len(sigmas) - 1, patched)
        out = sample_video(patched, positive, negative, start, eps, seed, steps, cfg, sampler_name, scheduler, denoise,
                           callback=progress.step_done, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
                           sigmas=sigmas)
        return io.NodeOutput({"samples": out[:frames].cpu()})
