"""Fitting a driving DensePose video to the body in the reference photo (beyond the reference: it feeds the frames
as they are).

A driving video of a taller, shorter or off-centre person makes the animated person stretch or drift. This module
measures the body in the driving frames and in a DensePose rendering of the reference photo, and moves the driving
frames with ONE scale and shift for the whole video, so that the body's height and centre match the photo's while the
motion between frames is untouched.

Measurement (decided here, used by the Pose Align node):

- foreground: pixels farther than ``tolerance`` (max over RGB, in [0, 1]) from DensePose's background colour
  viridis(0) (about RGB 65, 0, 81). The darkest body-part colours are about 30/255 away from it; video compression
  noise on the background stays within a few levels.
- body box: the bounding box of the foreground, but only over rows and columns that hold at least
  ``max(2, 2 %`` of the fullest row/column) foreground pixels, so that a few stray noise pixels (compression, a
  DensePose speck) do not stretch the box; a whole limb is far above that threshold. Height = box height; centre =
  box centre (both in pixels, with pixel ``i`` covering ``[i, i + 1)``).
- the driving body is measured on the first frame (``first-frame``) or as the median of the per-frame heights and
  centres (``median``: robust to a few frames where DensePose missed or doubled a limb; frames with no body are
  skipped).
- the reference and the driving frames may differ in size: heights and centres are compared as fractions of their
  image's height/width (both are later fitted to the same video size), and the scale is uniform in the driving
  frames' pixels, so the driving body keeps its proportions.

Resampling is nearest-neighbour: every output pixel is a copy of one input pixel, so DensePose part colours stay
exact (a bilinear blend would invent colours between parts and the background that the ControlNet never saw), and
integer scales/shifts move the body by exactly that many pixels. Pixels that come from outside the driving frame are
filled with the driving video's own background colour (the median colour of its background pixels), so the border is
seamless.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .densepose import VIRIDIS_ANCHORS
from .errors import MagicAnimateError

__all__ = ["ALIGN_MODES", "DENSEPOSE_BACKGROUND", "BodyBox", "PoseTransform", "align_pose", "apply_transform",
           "background_colour", "body_box", "fit_transform", "foreground_mask"]

ALIGN_MODES = ("first-frame", "median")

#: DensePose's background, matplotlib viridis(0), RGB in [0, 1].
DENSEPOSE_BACKGROUND = VIRIDIS_ANCHORS[0]

#: Frames gathered per step when moving a long video (bounds the temporary copies).
_CHUNK = 64


@dataclass(frozen=True)
class BodyBox:
    """A body's bounding box in pixels (``top``/``left`` inclusive, ``bottom``/``right`` exclusive) in an image of
    ``image_height`` x ``image_width``."""

    top: int
    bottom: int
    left: int
    right: int
    image_height: int
    image_width: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def centre(self) -> tuple[float, float]:
        """``(y, x)`` of the box centre in pixels."""
        return (self.top + self.bottom) / 2, (self.left + self.right) / 2


@dataclass(frozen=True)
class PoseTransform:
    """``out = scale * (in - source_centre) + target_centre`` for pixel coordinates ``(y, x)`` of the driving frames."""

    scale: float
    source_centre: tuple[float, float]
    target_centre: tuple[float, float]

    def describe(self) -> str:
        dy = self.target_centre[0] - self.source_centre[0]
        dx = self.target_centre[1] - self.source_centre[1]
        return f"scale {self.scale:.3f}, centre moved by ({dx:+.1f}, {dy:+.1f}) px (x, y)"


def foreground_mask(frames: torch.Tensor, tolerance: float = 0.06) -> torch.Tensor:
    """IMAGE frames ``(T, H, W, 3)`` in [0, 1] -> ``(T, H, W)`` bool: True where the pixel is not background."""
    background = torch.tensor(DENSEPOSE_BACKGROUND, dtype=torch.float32, device=frames.device)
    dist = (frames[..., :3].to(torch.float32) - background).abs().amax(dim=-1)
    return dist > tolerance  # NaN pixels compare False: background


def body_box(mask: torch.Tensor, min_fraction: float = 0.02) -> BodyBox | None:
    """The body box of one foreground mask ``(H, W)`` (see the module docstring), or None when it holds no body."""
    h, w = mask.shape
    rows, cols = mask.sum(dim=1), mask.sum(dim=0)
    if int(rows.max()) == 0:
        return None
    row_keep = rows >= max(2.0, min_fraction * float(rows.max()))
    col_keep = cols >= max(2.0, min_fraction * float(cols.max()))
    if not bool(row_keep.any()) or not bool(col_keep.any()):
        return None  # a speck of noise, no body
    ys, xs = row_keep.nonzero().flatten(), col_keep.nonzero().flatten()
    return BodyBox(int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1, h, w)


def background_colour(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The per-channel median of the background pixels (``~mask``) of ``frames`` ``(T, H, W, 3)`` -> ``(3,)``.

    A median returns one of the pixels' own values, so a clean rendering's background is reproduced exactly.
    """
    pixels = frames[..., :3][~mask]
    if pixels.shape[0] == 0:
        return torch.tensor(DENSEPOSE_BACKGROUND, dtype=frames.dtype, device=frames.device)
    if pixels.shape[0] > 1_000_000:
        pixels = pixels[torch.linspace(0, pixels.shape[0] - 1, 1_000_000, device=pixels.device).long()]
    return pixels.median(dim=0).values


def fit_transform(driving: list[BodyBox], reference: BodyBox, mode: str = "first-frame") -> PoseTransform:
    """One transform for the whole video from the driving boxes (one per measured frame) and the reference box.

    ``first-frame`` uses ``driving[0]``; ``median`` the median height and centre over all boxes.
    """
    if mode not in ALIGN_MODES:
        raise ValueError(f"mode must be one of {ALIGN_MODES}, got {mode!r}")
    if mode == "first-frame":
        driving = driving[:1]
    heights = torch.tensor([float(b.height) for b in driving])
    cy = torch.tensor([b.centre[0] for b in driving])
    cx = torch.tensor([b.centre[1] for b in driving])
    # torch.median of an even count returns the lower middle value: an actual frame's measurement.
    height, centre_y, centre_x = float(heights.median()), float(cy.median()), float(cx.median())
    frame_h, frame_w = driving[0].image_height, driving[0].image_width
    ref_height = reference.height / reference.image_height * frame_h
    ref_cy, ref_cx = reference.centre
    target = (ref_cy / reference.image_height * frame_h, ref_cx / reference.image_width * frame_w)
    return PoseTransform(scale=ref_height / height, source_centre=(centre_y, centre_x), target_centre=target)


def _source_index(size: int, scale: float, source: float, target: float, device: torch.device) -> torch.Tensor:
    """For each output pixel along one axis, the input pixel it copies (nearest: the one holding the pre-image of the
    output pixel's centre), or -1 when that lies outside the frame."""
    centres = torch.arange(size, dtype=torch.float64, device=device) + 0.5
    pre = (centres - target) / scale + source
    # Tiny epsilon: a pre-image exactly on a pixel edge (integer scales) goes to the same side for every frame.
    idx = torch.floor(pre + 1e-9).long()
    return torch.where((idx >= 0) & (idx < size), idx, torch.full_like(idx, -1))


def apply_transform(frames: torch.Tensor, transform: PoseTransform, fill: torch.Tensor) -> torch.Tensor:
    """Move every frame of ``(T, H, W, 3)`` by ``transform`` (nearest-neighbour); uncovered pixels get ``fill (3,)``.

    Returns a new ``(T, H, W, 3)`` tensor of the same dtype.
    """
    t, h, w, c = frames.shape
    iy = _source_index(h, transform.scale, transform.source_centre[0], transform.target_centre[0], frames.device)
    ix = _source_index(w, transform.scale, transform.source_centre[1], transform.target_centre[1], frames.device)
    out = fill.to(device=frames.device, dtype=frames.dtype).view(1, 1, 1, c).repeat(t, h, w, 1)
    ys, xs = (iy >= 0).nonzero().flatten(), (ix >= 0).nonzero().flatten()
    if ys.numel() == 0 or xs.numel() == 0:
        return out
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1  # covered rows/cols are contiguous
    for s in range(0, t, _CHUNK):
        chunk = frames[s:s + _CHUNK].index_select(1, iy[y0:y1]).index_select(2, ix[x0:x1])
        out[s:s + _CHUNK, y0:y1, x0:x1] = chunk
    return out


def align_pose(driving: torch.Tensor, reference: torch.Tensor, mode: str = "first-frame", tolerance: float = 0.06,
               where: str = "PoseAlign") -> tuple[torch.Tensor, PoseTransform]:
    """Driving DensePose frames ``(T, H, W, 3)`` + reference DensePose rendering ``(1, Hr, Wr, 3)`` -> the driving
    frames ``(T, H, W, 3)`` moved so that the body's height and centre match the reference's, and the transform.

    Raises :class:`MagicAnimateError` (prefixed with ``where``) for an empty input or a frame without a body.
    """
    if mode not in ALIGN_MODES:
        raise MagicAnimateError(f"{where}: mode {mode!r} is unknown; use one of {', '.join(ALIGN_MODES)}.")
    if driving.ndim != 4 or 0 in driving.shape[:3]:
        raise MagicAnimateError(f"{where}: pose_frames is empty (shape {tuple(driving.shape)}); connect the driving "
                                "DensePose video's frames.")
    if reference.ndim != 4 or 0 in reference.shape[:3]:
        raise MagicAnimateError(f"{where}: reference_pose is empty (shape {tuple(reference.shape)}); connect a "
                                "DensePose rendering of the reference photo.")
    ref_mask = foreground_mask(reference[:1], tolerance)[0]
    ref_box = body_box(ref_mask)
    if ref_box is None:
        raise MagicAnimateError(f"{where}: reference_pose holds no body (every pixel is DensePose's dark purple "
                                "background); connect a DensePose rendering of the reference photo in which the "
                                "person was detected.")
    _refuse_no_background(where, "reference_pose", ref_mask)
    first_mask = foreground_mask(driving[:1], tolerance)[0]
    _refuse_no_background(where, "pose_frames", first_mask)
    boxes = [body_box(first_mask)]
    if mode == "median":
        for s in range(1, driving.shape[0], _CHUNK):  # chunks: never a mask of a whole long video at once
            boxes.extend(body_box(m) for m in foreground_mask(driving[s:s + _CHUNK], tolerance))
    found = [b for b in boxes if b is not None]
    if mode == "first-frame" and boxes[0] is None:
        raise MagicAnimateError(f"{where}: the first frame of pose_frames holds no body (every pixel is DensePose's "
                                "background); set mode to median, or trim the video so that it starts with the "
                                "person in view.")
    if not found:
        raise MagicAnimateError(f"{where}: no frame of pose_frames holds a body (every pixel is DensePose's "
                                "background); connect the DensePose video of the driving motion.")
    transform = fit_transform(found, ref_box, mode)
    fill = background_colour(driving[:1], first_mask.unsqueeze(0))
    return apply_transform(driving, transform, fill), transform


def _refuse_no_background(where: str, name: str, mask: torch.Tensor) -> None:
    if bool(mask.all()):
        raise MagicAnimateError(f"{where}: {name} has no DensePose background (no dark purple, about RGB 65, 0, 81, "
                                "anywhere); it does not look like a viridis DensePose rendering. Connect DensePose "
                                "renderings like MagicAnimate's example videos.")
