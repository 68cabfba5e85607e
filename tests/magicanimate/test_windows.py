"""Segment windows against the reference scheduler's layouts (docs/ARCHITECTURE.md, "The uniform context scheduler")."""

import pytest

from magicanimate.windows import (
    frame_counts,
    open_windows,
    ordered_halving,
    padded_length,
    pyramid_weights,
    segment_windows,
    uniform_windows,
)


def span(a, b):
    return list(range(a, b + 1))


SPEC_TABLE = {
    16: ([span(0, 15)], [span(0, 15)]),
    24: ([span(0, 15), span(12, 23) + span(0, 3)], [span(0, 15), span(16, 23) + span(0, 7)]),
    32: ([span(0, 15), span(12, 27), span(24, 31) + span(0, 7)], [span(0, 15), span(16, 31)]),
    48: ([span(0, 15), span(12, 27), span(24, 39), span(36, 47) + span(0, 3)],
         [span(0, 15), span(16, 31), span(32, 47)]),
    100: ([span(s, s + 15) for s in range(0, 96, 12)] + [span(96, 99) + span(0, 11)],
          [span(s, s + 15) for s in range(0, 96, 16)] + [span(96, 99) + span(0, 11)]),
}


@pytest.mark.parametrize("frames", sorted(SPEC_TABLE))
def test_denoiser_and_controlnet_windows_equal_spec_table(frames):
    denoiser, controlnet = SPEC_TABLE[frames]
    assert uniform_windows(frames, 16, 4) == denoiser
    assert uniform_windows(frames, 16, 0) == controlnet
    assert segment_windows(frames) == denoiser


def test_coverage_counts_equal_spec_table():
    c48 = frame_counts(uniform_windows(48), 48)
    expect48 = [2] * 4 + [1] * 8 + [2] * 4 + [1] * 8 + [2] * 4 + [1] * 8 + [2] * 4 + [1] * 8
    assert c48 == expect48
    c100 = frame_counts(uniform_windows(100), 100)
    assert c100[0:16] == [2] * 16 and c100[16:24] == [1] * 8 and c100[24:28] == [2] * 4
    assert c100[84:88] == [2] * 4 and c100[88:96] == [1] * 8 and c100[96:100] == [2] * 4


@pytest.mark.parametrize("frames,count", [(96, 8), (112, 10), (128, 11)])
def test_window_counts_for_demo_lengths(frames, count):
    w = uniform_windows(frames)
    assert len(w) == count and all(len(x) == 16 for x in w)
    assert w[-1][0] == 12 * (count - 1)


def test_short_video_is_one_window_and_open_mode_never_wraps():
    assert uniform_windows(5) == [list(range(5))]
    for frames in (17, 20, 33, 48, 100):
        ws = open_windows(frames)
        assert ws[-1][-1] == frames - 1 and all(w == sorted(w) for w in ws)
        assert all(c >= 1 for c in frame_counts(ws, frames))


def test_ordered_halving_and_shifted_schedule():
    assert ordered_halving(0) == 0.0 and ordered_halving(1) == 0.5 and ordered_halving(2) == 0.25
    shifted = uniform_windows(32, step=1)  # h = 0.5 -> pad 16, windows start at frame 16
    assert shifted[0][0] == 16


def test_padding_and_pyramid():
    assert [padded_length(n) for n in (1, 16, 17, 42, 107, 125)] == [16, 16, 32, 48, 112, 128]
    assert pyramid_weights(4) == [1, 2, 2, 1] and pyramid_weights(5) == [1, 2, 3, 2, 1]
    with pytest.raises(ValueError):
        uniform_windows(20, 16, 16)
