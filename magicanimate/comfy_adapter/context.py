"""MagicAnimate segments: the model evaluation runs window by window and the per-frame predictions are averaged.

ComfyUI's ``calc_cond_batch`` hands the whole evaluation to ``model_options["context_handler"]`` when the handler's
``should_use_context`` says so, calling ``execute(calc_cond_batch, model, conds, x_in, timestep, model_options)``.
Those two methods are the whole contract (``comfy.context_windows.ContextHandlerABC``, the same in 0.3.75 and 0.33).
The window loop itself is the pack's own: between those versions core's ``IndexListContextHandler`` changed its
constructor, its window class and the signatures of the methods a subclass overrides, and it gained behaviour the
reference does not have (by default an extra "anchor" frame before each window; its step-dependent schedules also
shift windows between steps, which MagicAnimate's fixed windows never do). MagicAnimate's loop is small and fixed
(docs/ARCHITECTURE.md, "Segments"): cut the latents, timesteps and conds to the window's frames, run the window, add
its prediction times the fuse weight into a per-frame sum, divide by the summed weights at the end. The averaging
happens below CFG, exactly where the reference averages.
"""

from __future__ import annotations

from dataclasses import dataclass

import comfy.context_windows as cw
import comfy.model_management
import torch

from ..windows import pyramid_weights, segment_windows
from .core_control import PreparedHints, StepControls, resize_conds_controls
from .keys import SEGMENT_HANDLER_MARK

__all__ = ["SegmentOptions", "SegmentHandler", "SegmentWindow", "FUSE_METHODS"]

#: Fuse names -> per-position weights of a window of ``n`` frames ("average" is the reference's plain mean).
FUSE_METHODS = {"average": lambda n: [1.0] * n, "pyramid": pyramid_weights}


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


class SegmentWindow:
    """One window: the frame indices ``index_list`` into dimension ``dim`` (frames are the batch, dim 0).

    It is also what ``transformer_options["context_window"]`` holds while the window runs (read by the pack's
    conditioning and by anything else that looks for core's window there: ``index_list``, ``dim``,
    ``context_length``).
    """

    def __init__(self, index_list: list[int], dim: int = 0) -> None:
        self.index_list = [int(i) for i in index_list]
        self.dim = dim
        self.context_length = len(self.index_list)
        first = self.index_list[0] if self.index_list else 0
        # Consecutive frames (every window but a closed loop's wrapping one) are a slice: no index tensor to copy to
        # the device in every window of every step.
        self._start = first if self.index_list == list(range(first, first + self.context_length)) else None
        self._indices: dict[torch.device, torch.Tensor] = {}

    def _index(self, full: torch.Tensor) -> torch.Tensor:
        """The index tensor on ``full``'s device, built once per device (one host-to-device copy per run)."""
        index = self._indices.get(full.device)
        if index is None:
            index = self._indices[full.device] = torch.tensor(self.index_list, device=full.device, dtype=torch.long)
        return index

    def get_tensor(self, full: torch.Tensor, device=None, dim: int | None = None) -> torch.Tensor:
        """The window's frames of ``full`` along ``dim`` (a copy); a single-frame tensor (broadcast to all) as it is."""
        dim = self.dim if dim is None else dim
        if dim == 0 and full.shape[dim] == 1:
            return full
        if self._start is not None:
            return full.narrow(dim, self._start, self.context_length).to(device=device, copy=True)
        return full.index_select(dim, self._index(full)).to(device)

    def add_window(self, full: torch.Tensor, to_add: torch.Tensor, dim: int | None = None) -> torch.Tensor:
        """Add ``to_add`` (the window's frames) into ``full`` at the window's frames, in place; returns ``full``."""
        dim = self.dim if dim is None else dim
        if self._start is not None:
            full.narrow(dim, self._start, self.context_length).add_(to_add.to(full.dtype))
        else:
            full.index_add_(dim, self._index(full), to_add.to(full.dtype))
        return full


def _frame_sized(value: torch.Tensor, num_frames: int) -> bool:
    return value.ndim > 0 and value.shape[0] == num_frames


def _resize_model_conds(model_conds: dict, window: SegmentWindow, num_frames: int) -> dict:
    """``model_conds`` with every per-frame entry (a tensor, or a core ``CONDRegular``-like with a ``cond`` tensor,
    whose first dimension is the frame count) cut to the window's frames; other entries as they are."""
    out = dict(model_conds)
    for key, value in model_conds.items():
        if isinstance(value, torch.Tensor):
            if _frame_sized(value, num_frames):
                out[key] = window.get_tensor(value)
        elif isinstance(getattr(value, "cond", None), torch.Tensor) and hasattr(value, "_copy_with"):
            if _frame_sized(value.cond, num_frames):
                out[key] = value._copy_with(window.get_tensor(value.cond))
    return out


def resize_cond(cond_in: list[dict] | None, window: SegmentWindow, num_frames: int) -> list[dict] | None:
    """One cond list (core's processed conds) cut to ``window``: new dicts, the inputs are never modified."""
    if cond_in is None:
        return None
    resized = []
    for cond in cond_in:
        new = dict(cond)
        for key, value in cond.items():
            if isinstance(value, torch.Tensor) and _frame_sized(value, num_frames):
                new[key] = window.get_tensor(value)
            elif key == "model_conds" and isinstance(value, dict):
                new[key] = _resize_model_conds(value, window, num_frames)
        resized.append(new)
    return resized


class SegmentHandler(cw.ContextHandlerABC):
    """Context handler with MagicAnimate's fixed windows; frames are the batch dimension (dim 0)."""

    dim = 0

    def __init__(self, options: SegmentOptions) -> None:
        self.options = options
        self.context_length = options.length
        self.context_overlap = options.overlap
        self.closed_loop = options.closed_loop
        self.fuse = options.fuse
        self._hints = PreparedHints()  # core ControlNet hints fitted once per frame per run
        self._controls = StepControls()
        self._windows: dict[int, list[SegmentWindow]] = {}  # per frame count: the same windows every step
        self._weights: dict[tuple[int, torch.device], torch.Tensor] = {}  # per window length and device

    def __deepcopy__(self, memo: dict) -> SegmentHandler:
        # ModelPatcher.clone deep-copies model_options: options are immutable, per-evaluation state is not kept.
        return SegmentHandler(self.options)

    def end_run(self) -> None:
        """The sampling run is over (the MODEL's cleanup): drop the core ControlNet hints prepared for it."""
        self._hints.clear()

    def get_context_windows(self, model, x_in: torch.Tensor, model_options: dict) -> list[SegmentWindow]:
        num_frames = x_in.size(self.dim)
        if num_frames not in self._windows:
            self._windows[num_frames] = [SegmentWindow(w, dim=self.dim) for w in self.options.windows(num_frames)]
        return self._windows[num_frames]

    def _fuse_weights(self, length: int, device: torch.device) -> torch.Tensor:
        """The fusion weights of a window of ``length`` frames, ``(length,)`` float32 on ``device``, built once."""
        key = (length, device)
        if key not in self._weights:
            self._weights[key] = torch.tensor(FUSE_METHODS[self.fuse](length), device=device)
        return self._weights[key]

    def should_use_context(self, model, conds, x_in: torch.Tensor, timestep, model_options: dict) -> bool:
        return x_in.size(self.dim) > self.context_length

    def get_resized_cond(self, cond_in: list[dict] | None, x_in: torch.Tensor, window: SegmentWindow,
                         device=None) -> list[dict] | None:
        # Core ControlNets in the conds would get hint frames 0..L-1 in every window: give them the window's, each
        # frame computed once per evaluation where the chain allows it (core_control).
        resized = resize_cond(cond_in, window, x_in.size(self.dim))
        return resize_conds_controls(resized, window.index_list, self._controls)

    def execute(self, calc_cond_batch, model, conds: list, x_in: torch.Tensor, timestep: torch.Tensor,
                model_options: dict) -> list[torch.Tensor]:
        """Run every window through ``calc_cond_batch`` and return, per cond, the fused prediction like ``x_in``."""
        num_frames = x_in.size(self.dim)
        windows = self.get_context_windows(model, x_in, model_options)
        self._controls = StepControls([w.index_list for w in windows], num_frames, self._hints)
        shape = [1] * x_in.ndim
        shape[self.dim] = num_frames
        sums = [torch.zeros_like(x_in) for _ in conds]
        counts = [torch.zeros(shape, device=x_in.device) for _ in conds]
        transformer_options = model_options.setdefault("transformer_options", {})
        try:
            for window in windows:
                comfy.model_management.throw_exception_if_processing_interrupted()
                transformer_options["context_window"] = window
                sub_x = window.get_tensor(x_in)
                sub_t = window.get_tensor(timestep, dim=0)
                sub_conds = [self.get_resized_cond(cond, x_in, window) for cond in conds]
                outs = calc_cond_batch(model, sub_conds, sub_x, sub_t, model_options)
                weights = self._fuse_weights(window.context_length, x_in.device)
                weights = weights.reshape([-1 if d == self.dim else 1 for d in range(x_in.ndim)])
                for i, out in enumerate(outs):
                    window.add_window(sums[i], out * weights)
                    window.add_window(counts[i], weights)
                # Core ControlNet rows of frames no later window of this evaluation holds are dropped.
                self._controls.window_done(window.index_list)
            for s, c in zip(sums, counts, strict=True):
                s /= c
            return sums
        finally:
            transformer_options.pop("context_window", None)
            self._controls = StepControls()


setattr(SegmentHandler, SEGMENT_HANDLER_MARK, True)  # what composition_checks looks for
