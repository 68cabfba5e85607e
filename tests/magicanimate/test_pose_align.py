"""Pose Align math on synthetic DensePose renderings: known sizes/offsets, exact colours, exact relative motion."""

from __future__ import annotations

import pytest
import torch

from magicanimate.densepose import viridis_curve
from magicanimate.errors import MagicAnimateError
from magicanimate.pose_align import align_pose, apply_transform, body_box, fit_transform, foreground_mask

BG = torch.tensor([65, 0, 81]) / 255  # the background as DensePose videos store it (8-bit viridis(0))
PARTS = viridis_curve()[[60, 120, 180, 240]]  # four body-part colours


def canvas(frames: int, h: int, w: int) -> torch.Tensor:
    return BG.view(1, 1, 1, 3).repeat(frames, h, w, 1)


def draw_figure(img: torch.Tensor, top: int, left: int, height: int, width: int) -> None:
    """A stick figure filling exactly rows [top, top+height), cols [left, left+width): head, torso, two legs."""
    q = height // 4
    img[top:top + q, left + width // 4:left + width - width // 4] = PARTS[0]                       # head
    img[top + q:top + 3 * q, left:left + width] = PARTS[1]                                           # torso
    img[top + 3 * q:top + height, left:left + width // 3] = PARTS[2]                                 # left leg
    img[top + 3 * q:top + height, left + width - width // 3:left + width] = PARTS[3]                 # right leg


def box_of(frame: torch.Tensor):
    return body_box(foreground_mask(frame.unsqueeze(0))[0])


def test_figure_is_moved_onto_reference_within_one_pixel_background_exact_frames_kept():
    driving = canvas(3, 64, 80)
    for t in range(3):
        draw_figure(driving[t], 6 + t, 50, 20, 8)          # small, high and right
    reference = canvas(1, 64, 80)
    draw_figure(reference[0], 20, 16, 36, 14)             # taller, lower, left
    out, transform = align_pose(driving, reference, "first-frame")
    assert out.shape == driving.shape                     # frame count and size kept
    assert transform.scale == pytest.approx(36 / 20)
    ref_box, got = box_of(reference[0]), box_of(out[0])
    assert abs(got.height - ref_box.height) <= 1
    assert abs(got.centre[0] - ref_box.centre[0]) <= 1 and abs(got.centre[1] - ref_box.centre[1]) <= 1
    # Nearest-neighbour: every pixel is an input colour (no blends); the uncovered border is the exact background.
    colours = {tuple(c.tolist()) for c in out.reshape(-1, 3).unique(dim=0)}
    assert colours <= {tuple(c.tolist()) for c in torch.cat([BG[None], PARTS])}
    background = ~foreground_mask(out)
    assert torch.equal(out[background], BG.expand(int(background.sum()), 3))


def test_reference_of_another_size_is_matched_in_fractions_of_the_frame():
    driving = canvas(1, 64, 64)
    draw_figure(driving[0], 4, 4, 16, 8)
    reference = canvas(1, 128, 96)                        # twice as tall, 1.5 times as wide
    draw_figure(reference[0], 40, 30, 64, 16)             # half the height; centre at (72/128, 38/96)
    out, _ = align_pose(driving, reference, "median")
    got = box_of(out[0])
    assert abs(got.height - 32) <= 1                      # 64/128 of a 64-pixel frame
    assert abs(got.centre[0] - 72 / 128 * 64) <= 1 and abs(got.centre[1] - 38 / 96 * 64) <= 1
    assert abs((got.right - got.left) - 16) <= 1          # uniform scale: 8 px wide * 2


@pytest.mark.parametrize("ref_height,factor", [(20, 1), (40, 2)])
def test_moving_figure_keeps_its_relative_motion_exactly(ref_height, factor):
    frames = 6
    driving = canvas(frames, 96, 96)
    for t in range(frames):
        draw_figure(driving[t], 10 + t, 30 + 2 * t, 20, 8)  # walks down-right: (+1, +2) px per frame
    reference = canvas(1, 96, 96)
    draw_figure(reference[0], 30, 40, ref_height, 8)
    out, transform = align_pose(driving, reference, "first-frame")
    boxes = [box_of(f) for f in out]
    for t, b in enumerate(boxes):
        assert (b.top - boxes[0].top, b.left - boxes[0].left) == (factor * t, factor * 2 * t)
        assert b.height == boxes[0].height and b.right - b.left == boxes[0].right - boxes[0].left
    if factor == 1:  # integer shift: each frame is its input moved by the same whole number of pixels
        dy, dx = boxes[0].top - 10, boxes[0].left - 30
        assert torch.equal(out[:, dy:, dx:], driving[:, :96 - dy, :96 - dx])
    # One transform for the whole video: each frame aligned alone with it gives the same pixels.
    for t in range(frames):
        assert torch.equal(out[t:t + 1], apply_transform(driving[t:t + 1], transform, BG))


def test_median_mode_uses_median_height_and_centre_and_skips_empty_frames():
    driving = canvas(5, 64, 64)
    heights = [20, 20, 24, 40, 20]                        # one frame with a doubled limb (40 px): an outlier
    for t, h in enumerate(heights):
        draw_figure(driving[t], 8, 20, h, 8)
    empty = canvas(1, 64, 64)
    reference = canvas(1, 64, 64)
    draw_figure(reference[0], 10, 20, 30, 8)
    _, tf = align_pose(torch.cat([driving, empty]), reference, "median")
    assert tf.scale == pytest.approx(30 / 20)             # the median 20, not the mean 24.8
    _, tf_first = align_pose(driving[3:], reference, "first-frame")
    assert tf_first.scale == pytest.approx(30 / 40)


def test_stray_pixels_and_compression_noise_do_not_move_the_box():
    frame = canvas(1, 64, 64)
    draw_figure(frame[0], 10, 20, 24, 12)
    clean = box_of(frame[0])
    noisy = (frame + (torch.rand(frame.shape, generator=torch.Generator().manual_seed(0)) - 0.5) * 4 / 255)
    noisy[0, 60, 2] = PARTS[3]                            # one stray speck far from the body
    assert box_of(noisy[0]) == clean
    assert (clean.top, clean.bottom, clean.left, clean.right) == (10, 34, 20, 32)


def test_fit_transform_rejects_unknown_mode():
    b = body_box(torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError):
        fit_transform([b], b, "mean")


def test_empty_or_background_only_inputs_are_refused_with_the_input_named():
    body = canvas(2, 32, 32)
    draw_figure(body[0], 4, 4, 16, 8)
    draw_figure(body[1], 4, 4, 16, 8)
    blank = canvas(1, 32, 32)
    with pytest.raises(MagicAnimateError, match="reference_pose holds no body"):
        align_pose(body, blank)
    with pytest.raises(MagicAnimateError, match="first frame of pose_frames holds no body"):
        align_pose(torch.cat([blank, body]), body[:1])
    out, _ = align_pose(torch.cat([blank, body]), body[:1], "median")  # median: the empty frame is skipped
    assert torch.equal(out[0], blank[0])
    with pytest.raises(MagicAnimateError, match="no frame of pose_frames holds a body"):
        align_pose(blank.repeat(3, 1, 1, 1), body[:1], "median")
    with pytest.raises(MagicAnimateError, match="pose_frames is empty"):
        align_pose(body[:0], body[:1])
    with pytest.raises(MagicAnimateError, match="reference_pose is empty"):
        align_pose(body, torch.zeros(1, 0, 32, 3))
    with pytest.raises(MagicAnimateError, match="pose_frames has no DensePose background"):
        align_pose(torch.ones(2, 32, 32, 3) * 0.9, body[:1])   # not a DensePose rendering
    with pytest.raises(MagicAnimateError, match="mode 'mean' is unknown"):
        align_pose(body, body[:1], "mean")
