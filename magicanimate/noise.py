"""Initial noise for a video (docs/ARCHITECTURE.md, "Schedule, timesteps and noise scaling").

The reference draws one 16-frame clip ``(1, 4, 16, h, w)`` and tiles it along time, so frame ``k`` starts from clip
frame ``k mod 16``. The paper reports that this shared noise helps consistency across segments. Independent per-frame
noise is offered as an option.
"""

from __future__ import annotations

import torch

__all__ = ["NOISE_MODES", "video_noise", "tile_clip"]

NOISE_MODES = ("tiled", "independent")


def tile_clip(clip: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Repeat a clip ``(P, C, h, w)`` along frames to ``(num_frames, C, h, w)``; frame k gets clip frame ``k mod P``."""
    period = clip.shape[0]
    reps = -(-num_frames // period)
    return clip.repeat(reps, 1, 1, 1)[:num_frames]


def video_noise(seed: int, num_frames: int, channels: int, height: int, width: int, mode: str = "tiled",
                period: int = 16, dtype: torch.dtype = torch.float32,
                generator_device: str | torch.device = "cpu") -> torch.Tensor:
    """Standard normal noise ``(num_frames, channels, height, width)`` for a latent video.

    ``mode="tiled"`` draws the reference's ``(1, C, period, h, w)`` clip (same memory layout as the reference, so a
    generator in the same state gives the same numbers) and tiles it; ``"independent"`` draws every frame.
    """
    if mode not in NOISE_MODES:
        raise ValueError(f"noise mode must be one of {NOISE_MODES}, got {mode!r}")
    gen = torch.Generator(device=generator_device).manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    if mode == "independent":
        return torch.randn((num_frames, channels, height, width), generator=gen, device=generator_device,
                           dtype=dtype).cpu()
    clip = torch.randn((1, channels, period, height, width), generator=gen, device=generator_device, dtype=dtype)
    clip = clip[0].permute(1, 0, 2, 3).contiguous().cpu()
    return tile_clip(clip, num_frames)
