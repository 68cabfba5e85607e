"""Fitting images and pose frames to the working size (reference spec section 1, items 2 and 4).

The reference stretches every image to 512x512 with PIL's bicubic filter (antialiased when downscaling); ``stretch``
reproduces that through PIL itself on 8-bit pixels. ``pad`` and ``crop`` keep the aspect ratio instead.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["FIT_MODES", "fit_images", "to_rgb"]

FIT_MODES = ("stretch", "pad", "crop")


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """IMAGE ``(B, H, W, C)`` with C in {1, 3, 4} -> ``(B, H, W, 3)``: grayscale repeated, alpha dropped."""
    if images.ndim != 4:
        raise ValueError(f"expected an IMAGE batch (B, H, W, C), got shape {tuple(images.shape)}")
    c = images.shape[-1]
    if c == 1:
        return images.expand(-1, -1, -1, 3)
    if c in (3, 4):
        return images[..., :3]
    raise ValueError(f"expected 1, 3 or 4 channels, got {c}")


def _pil_resize(frame: torch.Tensor, width: int, height: int) -> torch.Tensor:
    arr = (frame.clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    img = Image.fromarray(arr, mode="RGB").resize((width, height), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img).copy()).to(torch.float32) / 255.0


def fit_images(images: torch.Tensor, width: int, height: int, mode: str = "stretch") -> torch.Tensor:
    """Fit an IMAGE batch ``(B, H, W, C)`` to ``(B, height, width, 3)``.

    - ``stretch``: resize to exactly width x height (the reference; aspect ratio not kept);
    - ``pad``: scale to fit inside, then pad with the border pixels to width x height;
    - ``crop``: scale to cover, then cut the centre.
    Frames already at the target size are returned unchanged (as the reference skips resizing).
    """
    if mode not in FIT_MODES:
        raise ValueError(f"fit must be one of {FIT_MODES}, got {mode!r}")
    images = to_rgb(images).to(torch.float32)
    b, h, w, _ = images.shape
    if (h, w) == (height, width):
        return images
    if mode == "stretch":
        return torch.stack([_pil_resize(f, width, height) for f in images])
    scale = min(width / w, height / h) if mode == "pad" else max(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = torch.stack([_pil_resize(f, nw, nh) for f in images])
    if mode == "crop":
        top, left = (nh - height) // 2, (nw - width) // 2
        return resized[:, top:top + height, left:left + width].contiguous()
    top, left = (height - nh) // 2, (width - nw) // 2
    chw = resized.movedim(-1, 1)
    padded = torch.nn.functional.pad(chw, (left, width - nw - left, top, height - nh - top), mode="replicate")
    return padded.movedim(1, -1).contiguous()
