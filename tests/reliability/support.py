"""Helpers shared by the reliability tests (importable as ``reliability.support``; ``tests/`` is on sys.path)."""

from __future__ import annotations

import torch

#: Tiny MagicAnimate networks with SD1.5's structure (32-wide text conditioning: fast on CPU).
TINY32 = dict(block_out_channels=(32, 64, 128, 128), cross_attention_dim=32)


def viridis_frames(n: int, height: int = 64, width: int = 64, expand: bool = False) -> torch.Tensor:
    """``n`` DensePose-looking IMAGE frames (viridis background, a moving viridis "body"); ``expand``: one frame
    repeated as a view (no memory for long videos)."""
    from magicanimate.densepose import viridis_curve

    curve = viridis_curve()
    count = 1 if expand else n
    idx = torch.zeros(count, height, width, dtype=torch.long)
    top, left = height // 4, width * 3 // 8
    idx[:, top:height - top, left:width - left] = torch.arange(count).view(count, 1, 1) * 3 % 200 + 40
    frames = curve[idx]
    return frames.expand(n, -1, -1, -1) if expand else frames


def text_cond(width: int = 32, value: float = 0.0) -> list:
    return [[torch.full((1, 77, width), value), {}]]
