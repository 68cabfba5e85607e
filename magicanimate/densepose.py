"""A quick check that pose frames look like the DensePose renderings the ControlNet was trained on.

MagicAnimate's ControlNet saw DensePose IUV renderings coloured with matplotlib's viridis map on a viridis(0)
background (dark purple, about RGB 65, 0, 81). Other colour maps (parula, jet) or a black background still run but
give poor motion, so the PoseControl node warns about them.
"""

from __future__ import annotations

import torch

__all__ = ["VIRIDIS_ANCHORS", "viridis_curve", "densepose_style_report"]

#: matplotlib's viridis at 0, 1/8, ..., 1 (RGB in [0, 1]); the curve between anchors is close to linear.
VIRIDIS_ANCHORS = (
    (0.267004, 0.004874, 0.329415), (0.282623, 0.140926, 0.457517), (0.253935, 0.265254, 0.529983),
    (0.206756, 0.371758, 0.553117), (0.163625, 0.471133, 0.558148), (0.128729, 0.563265, 0.551229),
    (0.134692, 0.658636, 0.517649), (0.266941, 0.748751, 0.440573), (0.993248, 0.906157, 0.143936),
)


def viridis_curve(samples: int = 256) -> torch.Tensor:
    """The viridis colour curve as ``(samples, 3)`` RGB points (piecewise-linear between the anchors)."""
    anchors = torch.tensor(VIRIDIS_ANCHORS, dtype=torch.float32)
    pos = torch.linspace(0, len(anchors) - 1, samples)
    lo = pos.floor().long().clamp(max=len(anchors) - 2)
    w = (pos - lo).unsqueeze(1)
    return anchors[lo] * (1 - w) + anchors[lo + 1] * w


def densepose_style_report(frames: torch.Tensor, max_pixels: int = 200_000, tolerance: float = 0.12) -> str | None:
    """None when IMAGE frames ``(B, H, W, 3)`` look like viridis DensePose; otherwise a one-line reason.

    Checks that most pixels lie near the viridis curve and that the most common colour (the background) is near
    viridis(0).
    """
    if frames.numel() == 0:
        return "no frames"
    per_frame = max(1, frames.shape[1] * frames.shape[2]) if frames.ndim == 4 else 1
    keep = -(-max_pixels // per_frame)
    if frames.ndim == 4 and frames.shape[0] > keep:
        # Look at evenly spaced frames only: never copy a long video (10,000 frames are GBs) to check its colours.
        frames = frames[torch.linspace(0, frames.shape[0] - 1, keep).long()]
    pixels = frames[..., :3].reshape(-1, 3).float()
    if pixels.shape[0] > max_pixels:
        idx = torch.linspace(0, pixels.shape[0] - 1, max_pixels).long()
        pixels = pixels[idx]
    curve = viridis_curve()
    dist = torch.cdist(pixels, curve).min(dim=1).values
    on_curve = float((dist < tolerance).float().mean())
    quant = (pixels * 15).round()
    values, counts = torch.unique(quant, dim=0, return_counts=True)
    background = values[counts.argmax()] / 15
    bg_dist = float((background - curve[0]).norm())
    if bg_dist > 0.15:
        kind = "black" if float(background.max()) < 0.1 else "white" if float(background.min()) > 0.9 else "other"
        return (f"the background colour is {kind} (RGB {[round(float(c) * 255) for c in background]}), not DensePose's "
                "viridis dark purple (about 65, 0, 81)")
    if on_curve < 0.9:
        return (f"only {on_curve:.0%} of pixels use viridis colours; the frames may use another colour map "
                "(e.g. parula or jet)")
    return None
