"""MagicAnimate segments on top of ComfyUI's context-window handler (integration map section 5).

Core's ``IndexListContextHandler`` averages per-frame predictions below CFG, exactly where the reference averages.
Two core defects are worked around here: ``set_step`` fails for frames-as-batch (B1; MagicAnimate's windows never
shift, so the step is always 0) and list indexing is deprecated in torch (G4; a tensor index is used instead).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import comfy.context_windows as cw
import torch

from ..windows import segment_windows
from .core_control import StepControls, resize_conds_controls

__all__ = ["SegmentOptions", "SegmentHandler", "FUSE_METHODS"]

#: Our fuse names -> ComfyUI fuse methods ("flat" is a plain per-frame average, as in the reference).
FUSE_METHODS = {"average": "flat", "pyramid": "pyramid"}


@dataclass(frozen=True)
class SegmentOptions:
    """How the video is cut into windows: reference defaults are 16 frames, overlap 4, closed loop, average."""

    length: int = 16
    overlap: int = 4
    closed_loop: bool = True
    fuse: str = "average"

    def __post_init__(self) -> None:
        if not 1 <= self.length <= 24:
            raise ValueError(f"segment length must be 1..24 (the motion modules know 24 positions), got {self.length}")
        if not 0 <= self.overlap < self.length:
            raise ValueError(f"overlap must be 0..{self.length - 1}, got {self.overlap}")
        if self.fuse not in FUSE_METHODS:
            raise ValueError(f"fuse must be one of {sorted(FUSE_METHODS)}, got {self.fuse!r}")

    def windows(self, num_frames: int) -> list[list[int]]:
        return segment_windows(num_frames, self.length, self.overlap, self.closed_loop)


class _TensorIndexWindow(cw.IndexListContextWindow):
    """A window that slices frames with an index tensor (G4) instead of a deprecated list index."""

    def _index(self, full: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.index_list, device=full.device, dtype=torch.long)

    def get_tensor(self, full: torch.Tensor, device=None, dim=None) -> torch.Tensor:
        dim = self.dim if dim is None else dim
        if dim == 0 and full.shape[dim] == 1:
            return full
        return full.index_select(dim, self._index(full)).to(device)

    def add_window(self, full: torch.Tensor, to_add: torch.Tensor, dim=None) -> torch.Tensor:
        dim = self.dim if dim is None else dim
        full.index_add_(dim, self._index(full), to_add.to(full.dtype))
        return full


def _schedule(num_frames: int, handler: SegmentHandler, model_options: dict) -> list[list[int]]:
    return handler.options.windows(num_frames)


class SegmentHandler(cw.IndexListContextHandler):
    """Context handler with MagicAnimate's fixed windows; frames are the batch dimension (dim 0)."""

    #: Marks our handler (an ``isinstance`` test fails when the pack is imported twice under different names).
    magicanimate_segments = True

    def __init__(self, options: SegmentOptions) -> None:
        fuse = cw.get_matching_fuse_method(FUSE_METHODS[options.fuse])
        super().__init__(cw.ContextSchedule("magicanimate", _schedule), fuse,
                         context_length=options.length, context_overlap=options.overlap,
                         closed_loop=options.closed_loop, dim=0)
        self.options = options
        self._controls = StepControls()

    def __deepcopy__(self, memo: dict) -> SegmentHandler:
        # ModelPatcher.clone deep-copies model_options (G3): options are immutable, per-evaluation state is not kept.
        new = SegmentHandler(self.options)
        new.callbacks = copy.deepcopy(self.callbacks, memo)
        return new

    def execute(self, calc_cond_batch, model, conds, x_in, timestep, model_options):
        num_frames = x_in.size(0)
        self._controls = StepControls(self.options.windows(num_frames), num_frames)
        try:
            return super().execute(calc_cond_batch, model, conds, x_in, timestep, model_options)
        finally:
            self._controls = StepControls()

    def evaluate_context_windows(self, calc_cond_batch, model, x_in, conds, timestep, enumerated_context_windows,
                                 model_options, device=None, first_device=None):
        results = []
        for item in enumerated_context_windows:
            results += super().evaluate_context_windows(calc_cond_batch, model, x_in, conds, timestep, [item],
                                                        model_options, device, first_device)
            # Core ControlNet rows of frames no later window of this evaluation holds are dropped (bounded memory).
            self._controls.window_done(item[1].index_list)
        return results

    def get_resized_cond(self, cond_in: list[dict], x_in: torch.Tensor, window: cw.IndexListContextWindow,
                         device=None) -> list:
        # Core ControlNets in the conds would get hint frames 0..L-1 in every window (B2): give them the window's,
        # each frame computed once per evaluation where the chain allows it (core_control).
        resized = super().get_resized_cond(cond_in, x_in, window, device)
        return resize_conds_controls(resized, window.index_list, self._controls)

    def set_step(self, timestep: torch.Tensor, model_options: dict) -> None:
        self._step = 0  # windows never shift between steps (spec section 6, item 3)

    def get_context_windows(self, model, x_in: torch.Tensor, model_options: dict) -> list[cw.IndexListContextWindow]:
        return [_TensorIndexWindow(w, dim=0) for w in self.options.windows(x_in.size(0))]
