"""Fitting images and pose frames to the working size (docs/ARCHITECTURE.md, "Input preprocessing").

The reference stretches every image to 512x512 with PIL's bicubic filter (antialiased when downscaling); ``stretch``
reproduces that through PIL itself on 8-bit pixels. ``pad`` and ``crop`` keep the aspect ratio instead.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .errors import MagicAnimateError
from .ram_check import available_ram_bytes, format_bytes

__all__ = ["FIT_MODES", "fit_images", "to_rgb", "check_fit_fits"]

FIT_MODES = ("stretch", "pad", "crop")
#: ``crop`` scales a frame whole (then cuts it) only while the scaled frame is at most this many times the output.
CROP_SCALE_LIMIT = 4


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


def check_fit_fits(frames: int, width: int, height: int, available: int | None = None) -> int:
    """Bytes :func:`fit_images` allocates for ``frames`` outputs of ``width`` x ``height`` (float32 RGB plus one 8-bit
    frame of scratch); a :class:`MagicAnimateError` with the figures when that exceeds the RAM available now."""
    need = int(frames) * int(width) * int(height) * 3 * 4 + int(width) * int(height) * 3 * 2
    avail = available_ram_bytes() if available is None else int(available)
    if need > avail:
        raise MagicAnimateError(f"fitting {frames} images to {width}x{height} needs about {format_bytes(need)} of RAM "
                                f"but only {format_bytes(avail)} is available; use a smaller width/height or fewer "
                                "frames.")
    return need


def _pil_resize(frame: torch.Tensor, width: int, height: int,
                box: tuple[float, float, float, float] | None = None) -> torch.Tensor:
    """``(H, W, 3)`` float frame -> ``(height, width, 3)`` through PIL bicubic on 8-bit pixels; ``box`` (left, top,
    right, bottom, source pixels) resamples only that region, exactly as resizing the whole frame and cutting it."""
    arr = (frame.clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    img = Image.fromarray(arr, mode="RGB").resize((width, height), Image.BICUBIC, box=box)
    return torch.from_numpy(np.asarray(img).copy()).to(torch.float32) / 255.0


def fit_images(images: torch.Tensor, width: int, height: int, mode: str = "stretch") -> torch.Tensor:
    """Fit an IMAGE batch ``(B, H, W, C)`` to ``(B, height, width, 3)``.

    - ``stretch``: resize to exactly width x height (the reference; aspect ratio not kept);
    - ``pad``: scale to fit inside, then pad with the border pixels to width x height;
    - ``crop``: scale to cover, then cut the centre.
    Frames already at the target size are returned unchanged (as the reference skips resizing). Memory is bounded by
    the output: ``crop`` of an extreme aspect ratio resamples only the region it keeps (PIL's ``box``), ``pad`` never
    scales past the target, and each frame is resized on its own.
    """
    if mode not in FIT_MODES:
        raise ValueError(f"fit must be one of {FIT_MODES}, got {mode!r}")
    images = to_rgb(images)
    b, h, w, _ = images.shape
    if (h, w) == (height, width):
        return images.to(torch.float32)
    check_fit_fits(b, width, height)
    if mode == "stretch":
        return torch.stack([_pil_resize(f, width, height) for f in images])
    scale = min(width / w, height / h) if mode == "pad" else max(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if mode == "crop":
        top, left = (nh - height) // 2, (nw - width) // 2
        if nw * nh <= CROP_SCALE_LIMIT * width * height:
            # Scale, then cut: the result this mode has always given (bounded: at most 4x the output per frame).
            return torch.stack([_pil_resize(f, nw, nh)[top:top + height, left:left + width] for f in images])
        # An extreme aspect ratio: resample only the region kept, in source pixels (equal up to PIL's rounding).
        sx, sy = w / nw, h / nh
        box = (left * sx, top * sy, (left + width) * sx, (top + height) * sy)
        return torch.stack([_pil_resize(f, width, height, box) for f in images])
    nw, nh = min(nw, width), min(nh, height)
    resized = torch.stack([_pil_resize(f, nw, nh) for f in images])
    top, left = (height - nh) // 2, (width - nw) // 2
    chw = resized.movedim(-1, 1)
    padded = torch.nn.functional.pad(chw, (left, width - nw - left, top, height - nh - top), mode="replicate")
    return padded.movedim(1, -1).contiguous()
