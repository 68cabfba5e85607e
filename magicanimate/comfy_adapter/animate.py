"""One animation from the node's inputs to the output latents: the adapter's entry point for Temporal Sample.

:func:`animate` pads the video to whole segments (docs/ARCHITECTURE.md, "Padding, cropping and windows"), fits the
pose frames, draws the initial noise, checks what core nodes did to the MODEL, installs the conditioning, samples and
crops back to one latent per pose frame. It returns an :class:`AnimationRun`: the latents and what produced them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import comfy.model_patcher
import comfy.utils
import latent_preview
import torch

from ..errors import MagicAnimateError
from ..frames import fit_images
from ..pose_frames import frame_count
from ..ram_check import check_run_fits
from ..windows import padded_length
from .composition_checks import check_temporal_sample
from .conditioning import apply_conditioning
from .conditioning_state import ConditioningState
from .context import SegmentOptions
from .payloads import Appearance, PoseCondition
from .sampling import REFERENCE_SAMPLER, initial_noise, sample_video, video_sigmas

__all__ = ["AnimationRun", "NoiseSource", "Progress", "WindowProgress", "animate", "recorded_runs"]


@dataclass
class AnimationRun:
    """What one :func:`animate` call did.

    ``latents``: the result ``(frames, 4, h, w)`` on the CPU, one latent per pose frame (``None`` until sampling
    ends); ``state``: the conditioning state the run sampled with (``None`` when no step ran and the latent passed
    through); ``windows``: the windows of every step over the padded video (frame indices; empty when no step ran);
    ``sigmas``: the sigma table ``(steps + 1,)``.
    """

    latents: torch.Tensor | None
    state: ConditioningState | None
    windows: list[list[int]]
    sigmas: torch.Tensor


class NoiseSource(Protocol):
    """A core NOISE input (e.g. Random Noise): standard normal noise shaped like ``input_latent["samples"]``."""

    def generate_noise(self, input_latent: dict) -> torch.Tensor: ...


class Progress(Protocol):
    """Progress reporting of a run: ``start`` once before sampling, then a call per window and per step."""

    def start(self, steps: int, windows_per_step: int, model: comfy.model_patcher.ModelPatcher) -> None: ...

    def window_done(self) -> None: ...

    def step_done(self, step: int, x0: torch.Tensor, x: torch.Tensor, total_steps: int) -> None: ...


class WindowProgress:
    """ComfyUI's progress bar over steps x windows, with a latent preview of the first frame after every step."""

    def __init__(self) -> None:
        self.per_step = 1
        self.done = 0
        self.total = 1
        self.bar = None
        self.previewer = None

    def start(self, steps: int, windows_per_step: int, model: comfy.model_patcher.ModelPatcher) -> None:
        self.per_step = max(1, windows_per_step)
        self.total = max(1, steps) * self.per_step
        self.bar = comfy.utils.ProgressBar(self.total)
        self.previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)

    def window_done(self) -> None:
        self.done = min(self.done + 1, self.total)
        if self.bar is not None:
            self.bar.update_absolute(self.done, self.total)

    def step_done(self, step: int, x0: torch.Tensor, x: torch.Tensor, total_steps: int) -> None:
        self.done = min((step + 1) * self.per_step, self.total)
        preview = None
        if self.previewer is not None:
            preview = self.previewer.decode_latent_to_preview_image("JPEG", x0[:1])
        if self.bar is not None:
            self.bar.update_absolute(self.done, self.total, preview)


_recorders: list[list[AnimationRun]] = []


@contextmanager
def recorded_runs() -> Iterator[list[AnimationRun]]:
    """Collect every run :func:`animate` starts inside the ``with`` block, in order.

    A run is added as soon as its conditioning state exists, before sampling, so a caller that goes through the node
    (tests, benchmarks) can read the state of a run that was interrupted. Nothing is kept after the block.
    """
    runs: list[AnimationRun] = []
    _recorders.append(runs)
    try:
        yield runs
    finally:
        _recorders[:] = [r for r in _recorders if r is not runs]


def _extend(latent: torch.Tensor, frames: int) -> torch.Tensor:
    """``latent`` ``(N, 4, h, w)`` cut or edge-padded with its last frame to ``(frames, 4, h, w)``."""
    return torch.cat([latent, latent[-1:].expand(max(0, frames - latent.shape[0]), -1, -1, -1)])[:frames]


def animate(model: comfy.model_patcher.ModelPatcher, appearance: Appearance, pose: PoseCondition, positive: list,
            negative: list, *, seed: int = 1, steps: int = 25, cfg: float = 7.5,
            sampler_name: str = REFERENCE_SAMPLER, scheduler: str = "normal", denoise: float = 1.0,
            noise_mode: str = "tiled", segments: SegmentOptions | None = None, latent: torch.Tensor | None = None,
            noise: NoiseSource | None = None, progress: Progress | None = None) -> AnimationRun:
    """Animate ``appearance`` along ``pose`` with the temporal ``model``; inputs as Temporal Sample validated them.

    ``appearance.latent`` ``(K, 4, h, w)`` sets the size; ``pose.frames`` (an IMAGE ``(T, H, W, 3)``, fitted here
    whole, or a frame source, fitted a chunk at a time as windows need it) sets the frame count T.
    ``latent``: an optional starting latent ``(N, 4, h, w)`` float32 (for ``denoise`` < 1), cut or padded to the
    video; ``noise``: an optional core NOISE source used instead of ``seed`` and ``noise_mode``. Returns the run with
    latents ``(T, 4, h, w)``. Raises :class:`MagicAnimateError` for a request that cannot run.
    """
    segments = segments or SegmentOptions()
    frames = frame_count(pose.frames)
    streamed = not isinstance(pose.frames, torch.Tensor)
    _, c, h, w = appearance.latent.shape
    total = padded_length(frames, segments.length)  # edge-padded like the reference, cropped at the end
    sigmas = video_sigmas(model, sampler_name, scheduler, steps, denoise)
    if len(sigmas) < 2:
        if latent is None:
            raise MagicAnimateError(
                f"TemporalSample: denoise {denoise} with {steps} steps leaves no step to run, so the output would "
                "be an empty latent. Set denoise above 0 (1.0 animates from noise), or connect a latent to pass "
                "it through unchanged.")
        # Like core KSampler: nothing to denoise, the latent passes through (one entry per pose frame).
        return AnimationRun(_extend(latent, frames).cpu(), None, [], sigmas)
    # Refuse up front (before any frame is resized) what cannot fit; otherwise windows run one after another.
    check_run_fits(frames, total, w * 8, h * 8, pose_streamed=streamed,
                   pose_resized=streamed or tuple(pose.frames.shape[1:3]) != (h * 8, w * 8))
    if not streamed:
        pose = dataclasses.replace(pose, frames=fit_images(pose.frames, w * 8, h * 8, pose.fit))
    # No starting latent: one all-zero frame expanded to the video (no memory per frame; ComfyUI reads it only).
    start = _extend(latent, total) if latent is not None else torch.zeros(1, c, h, w).expand(total, c, h, w)
    if noise is not None:
        eps = noise.generate_noise({"samples": start})
    else:
        eps = initial_noise(seed, start, noise_mode, period=segments.length)
    windows = segments.windows(total)
    check_temporal_sample(model, len(windows))  # core nodes on the MODEL: warn or refuse
    patched, state = apply_conditioning(model, appearance, pose, segments,
                                        on_window=progress.window_done if progress is not None else None)
    run = AnimationRun(None, state, windows, sigmas)
    for runs in _recorders:
        runs.append(run)
    if progress is not None:
        progress.start(len(sigmas) - 1, len(windows), patched)
    out = sample_video(patched, positive, negative, start, eps, seed, steps, cfg, sampler_name, scheduler, denoise,
                       callback=progress.step_done if progress is not None else None,
                       disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, sigmas=sigmas,
                       noise_is_scratch=noise is None)  # a core NOISE node's tensor is not ours to overwrite
    run.latents = out[:frames].cpu()
    return run
