"""The per-run state of the conditioning wrappers: the reference bank and the DensePose ControlNet residual cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..frame_cache import FrameCache
from ..pose_frames import StreamedHints
from .context import SegmentOptions
from .payloads import Appearance, PoseCondition

__all__ = ["ConditioningState", "BlockKey"]

#: ComfyUI's ``(block kind, block id, transformer index)`` of a self-attention, e.g. ``("output", 3, 0)``.
BlockKey = tuple[str, int, int]


@dataclass
class ConditioningState:
    """Per-run caches, created per patched model.

    Never deep-copied: ``ModelPatcher.clone`` deep-copies ``model_options``, and the wrappers must share this object
    (docs/ARCHITECTURE.md, "How each stage maps to ComfyUI").

    Appearance: ``attn1``: the denoiser's 10 reference self-attentions by block key; ``bank``: the encoder's ``norm1``
    tokens ``(1, K*N, C)`` per block for the current step; ``kv``: their keys and values ``(1, K*N, C)`` per block in
    the UNet's compute dtype; ``cond_context``: the first positive prompt's text context ``(1, 77, C)``.

    DensePose ControlNet: ``hints``: ``(F, 3, H, W)`` on the host in the ControlNet's compute dtype (pinned on CUDA,
    copied per new frame without a sync), or for pose frames read from a VIDEO a :class:`StreamedHints` that makes
    them a chunk at a time; ``control_cache``: a :class:`FrameCache` frame -> per-level residuals
    ``(1, C, h, w)`` already scaled by the strength and in the UNet's compute dtype, each in its own storage (a frame
    kept for a later window never pins its whole ControlNet batch), dropped after the last window holding the frame;
    ``window_control``: the current window's per-frame residuals per level (``[(1, C, h, w)] * f``), concatenated
    only for the UNet call that uses them; ``step_sigma``: the sigma of the current model evaluation (a host float),
    tested against ``sigma_range`` (the start/end percent as sigmas) to set ``control_active``.

    ``step_t``: the current evaluation's timestep ``(1,)`` in float32 on the sampling device.
    """

    appearance: Appearance | None
    pose: PoseCondition | None
    segments: SegmentOptions
    attn1: dict[BlockKey, torch.nn.Module]
    step_sigma: float | None = None
    bank: dict = field(default_factory=dict)
    kv: dict = field(default_factory=dict)
    cond_context: torch.Tensor | None = None
    hints: torch.Tensor | StreamedHints | None = None
    control_cache: FrameCache = field(default_factory=FrameCache)
    window_control: dict | None = None
    control_active: bool = True
    step_t: torch.Tensor | None = None
    sigma_range: tuple[float, float] = (float("inf"), 0.0)
    stats: dict = field(default_factory=lambda: {"encoder_runs": 0, "control_frames": 0, "windows": 0})
    on_window: Callable[[], None] | None = None

    def __deepcopy__(self, memo: dict) -> ConditioningState:
        return self

    def reset(self) -> None:
        """Drop every per-run cache (at the start and the end of a sampling run, interrupted or not)."""
        self.step_sigma, self.bank, self.kv = None, {}, {}
        if isinstance(self.hints, StreamedHints):
            self.hints.close()  # the pose video's file and decoded chunks, also after an interruption
        self.cond_context, self.hints = None, None
        self.control_cache = FrameCache()
        self.window_control, self.control_active, self.step_t = None, True, None
