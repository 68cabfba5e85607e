"""Segment (context window) layouts and frame padding (docs/ARCHITECTURE.md, "Window layout").

MagicAnimate denoises a video in overlapping 16-frame windows whose predictions are averaged per frame. The reference
calls AnimateDiff's "uniform" scheduler with step 0, stride 1 and ``closed_loop=True``: windows start every
``16 - overlap`` frames and the last one wraps around to frame 0.
"""

from __future__ import annotations

import math

__all__ = ["ordered_halving", "uniform_windows", "open_windows", "segment_windows", "frame_counts",
           "padded_length", "pyramid_weights"]


def ordered_halving(step: int) -> float:
    """Bit-reversed 64-bit value of ``step`` divided by 2**64 (0 for step 0)."""
    reversed_bits = int(f"{int(step):064b}"[::-1], 2)
    return reversed_bits / (1 << 64)


def uniform_windows(num_frames: int, context_size: int = 16, overlap: int = 4, closed_loop: bool = True,
                    step: int = 0, stride: int = 1) -> list[list[int]]:
    """The reference "uniform" context scheduler (docs/ARCHITECTURE.md, "The uniform context scheduler").

    Returns a list of windows, each a list of ``context_size`` frame indices (``num_frames`` of them if the video is
    not longer than one window). Indices wrap modulo ``num_frames``. With the reference arguments (step 0, stride 1,
    size 16, overlap 4, closed loop) windows start at 0, 12, 24, ... while the start is below ``num_frames``.
    """
    if num_frames <= 0:
        raise ValueError("num_frames must be positive")
    if context_size <= 0 or not 0 <= overlap < context_size:
        raise ValueError(f"need 0 <= overlap < context_size, got overlap={overlap}, context_size={context_size}")
    if num_frames <= context_size:
        return [list(range(num_frames))]
    capped_stride = min(stride, int(math.ceil(math.log2(num_frames / context_size))) + 1)
    h = ordered_halving(step)
    windows: list[list[int]] = []
    for dilation in (1 << i for i in range(capped_stride)):
        pad = int(round(num_frames * h))
        end = num_frames + pad + (0 if closed_loop else -overlap)
        for start in range(int(h * dilation) + pad, end, context_size * dilation - overlap):
            windows.append([e % num_frames for e in range(start, start + context_size * dilation, dilation)])
    return windows


def open_windows(num_frames: int, context_size: int = 16, overlap: int = 4) -> list[list[int]]:
    """Non-wrapping windows: start every ``context_size - overlap`` frames, last window clamped to the video end.

    Beyond the reference, whose closed-loop windows always wrap: no window mixes the end of the video with its start.
    """
    if num_frames <= context_size:
        return [list(range(num_frames))]
    step = context_size - overlap
    starts = list(range(0, num_frames - context_size + 1, step))
    if starts[-1] + context_size < num_frames:
        starts.append(num_frames - context_size)
    return [list(range(s, s + context_size)) for s in starts]


def segment_windows(num_frames: int, context_size: int = 16, overlap: int = 4,
                    closed_loop: bool = True) -> list[list[int]]:
    """Windows the denoiser runs on: the reference layout when ``closed_loop``, else :func:`open_windows`."""
    if closed_loop:
        return uniform_windows(num_frames, context_size, overlap, closed_loop=True)
    return open_windows(num_frames, context_size, overlap)


def frame_counts(windows: list[list[int]], num_frames: int) -> list[int]:
    """How many windows cover each frame, length ``num_frames``."""
    counts = [0] * num_frames
    for window in windows:
        for i in set(window):
            counts[i] += 1
    return counts


def pyramid_weights(length: int) -> list[float]:
    """Per-position weights ``1, 2, ..., peak, ..., 2, 1`` that favour a window's centre frames."""
    if length % 2 == 0:
        half = list(range(1, length // 2 + 1))
        return [float(w) for w in half + half[::-1]]
    half = list(range(1, (length + 1) // 2))
    return [float(w) for w in half + [float((length + 1) // 2)] + half[::-1]]


def padded_length(num_frames: int, multiple: int = 16) -> int:
    """Frame count after the reference's edge padding to a multiple of ``multiple``.

    See docs/ARCHITECTURE.md, "Padding, cropping and windows".
    """
    if num_frames <= 0:
        raise ValueError("num_frames must be positive")
    if multiple <= 1:
        return num_frames
    return int(math.ceil(num_frames / multiple) * multiple)
