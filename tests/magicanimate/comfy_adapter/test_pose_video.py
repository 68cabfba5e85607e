"""Pose frames from core's VIDEO, decoded a chunk at a time: the same frames as core Get Video Components (on the
ComfyUI this suite runs against), the same hints as the IMAGE path, one decoding pass per model evaluation, and
bounded memory (magicanimate/comfy_adapter/pose_video.py, magicanimate/pose_frames.py)."""

from __future__ import annotations

from fractions import Fraction
from itertools import cycle
from pathlib import Path

import pytest
import torch
from comfy_api.latest import InputImpl, Types
from tiny_models import viridis_frames
from video_probe import write_video

from magicanimate.comfy_adapter.pose_residuals import prepare_hints
from magicanimate.comfy_adapter.pose_video import VideoFrames, first_frames, video_frame_source
from magicanimate.frames import fit_images
from magicanimate.pose_frames import StreamedHints, TensorFrames
from magicanimate.windows import segment_windows

RUNNING = Path(__file__).resolve().parents[3] / "example_inputs" / "running.mp4"


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """An odd-sized video (width 72: not a multiple of 32, core 0.33's alignment path), a square one in mkv (no
    frame index in the container: counted from packets) and the shipped 512x512 example."""
    root = tmp_path_factory.mktemp("pose_video")
    odd, mkv = root / "odd.mp4", root / "square.mkv"
    write_video(odd, viridis_frames(37, 40, 72) * 0.9 + torch.rand(37, 40, 72, 3) * 0.1)
    write_video(mkv, viridis_frames(21, 48, 48))
    return {"odd": odd, "mkv": mkv, "running": RUNNING}


def core_frames(path: Path) -> torch.Tensor:
    """What core Get Video Components gives for the file: the IMAGE path's frames."""
    return InputImpl.VideoFromFile(str(path)).get_components().images


@pytest.mark.parametrize("name", ["odd", "mkv", "running"])
def test_chunks_equal_core_get_video_components_bit_for_bit(videos, name):
    whole = core_frames(videos[name])
    for chunk in (1, 5, 16):
        source = VideoFrames(InputImpl.VideoFromFile(str(videos[name])), chunk_frames=chunk)
        assert source.length == whole.shape[0]
        parts, start, sizes = [], 0, cycle((3, 1, 7, 16, 2))  # uneven reads, as windows ask for them
        while start < source.length:
            stop = min(source.length, start + next(sizes))
            parts.append(source.read(start, stop))
            start = stop
        got = torch.cat(parts)
        assert got.dtype == whole.dtype and torch.equal(got, whole), (name, chunk)
        assert source.passes == 1 and source._container is None  # one pass, and the file is closed at the end


def test_reading_behind_restarts_one_pass_and_reading_ahead_skips(videos):
    whole = core_frames(videos["odd"])
    source = VideoFrames(InputImpl.VideoFromFile(str(videos["odd"])), chunk_frames=4)
    assert torch.equal(source.read(10, 14), whole[10:14])
    assert torch.equal(source.read(20, 22), whole[20:22])
    assert source.passes == 1
    assert torch.equal(source.read(0, 3), whole[0:3])  # behind: a new pass from the start
    assert source.passes == 2
    source.close()
    assert source._container is None


@pytest.mark.parametrize("fit,prefetch", [("stretch", True), ("pad", True), ("crop", False)])
def test_streamed_hints_equal_the_image_paths_hints(videos, fit, prefetch):
    """Every window of every step gets the rows of prepare_hints(fit_images(whole video)) (edge-padded), bit for bit,
    while at most two chunks of hints are kept (plus one read ahead) and the video is read once per evaluation."""
    images = core_frames(videos["odd"])
    frames, total, h, w = images.shape[0], 48, 64, 64
    expected = prepare_hints(fit_images(images, w, h, fit), total, h, w).to(torch.float16)
    source = VideoFrames(InputImpl.VideoFromFile(str(videos["odd"])))
    hints = StreamedHints(source, total, h, w, fit=fit, dtype=torch.float16, prefetch=prefetch)
    assert hints.shape == tuple(expected.shape)
    for evaluation in range(2):
        seen: set[int] = set()
        for window in segment_windows(total, 16, 4, True):
            todo = [i for i in window if i not in seen]  # the frames whose residuals are not cached yet
            seen.update(todo)
            if todo:
                got = hints.take(todo)
                assert got.dtype == torch.float16 and torch.equal(got, expected[todo])
                last = min(max(todo), frames - 1) // 16
                # The next chunk is being read ahead while this window would run, unless it is the video's last.
                assert set(hints._ahead) == ({last + 1} if prefetch and last < hints.last_chunk else set())
            assert len(hints.chunks) <= 2
        assert source.passes == evaluation + 1
    assert hints.reads == 2 * -(-frames // 16)  # every chunk fitted once per evaluation
    hints.close()
    assert not hints.chunks and source._container is None


def test_a_video_holding_its_frames_is_read_from_them_and_first_frames_reads_one_chunk(videos):
    images = viridis_frames(5)
    held = InputImpl.VideoFromComponents(Types.VideoComponents(images=images, audio=None, frame_rate=Fraction(25)))
    source, first = video_frame_source(held)
    assert isinstance(source, TensorFrames) and source.images is images and torch.equal(first, images)

    class Counting:
        """A VideoFromFile that counts the frames core converts."""

        def __init__(self, path: Path) -> None:
            self.video, self.converted = InputImpl.VideoFromFile(str(path)), 0

        def get_stream_source(self):
            return self.video.get_stream_source()

        def get_components_internal(self, container):
            out = self.video.get_components_internal(container)
            self.converted += out.images.shape[0] if out.images.ndim == 4 else 0
            return out

    counting = Counting(videos["running"])
    source = VideoFrames(counting)
    assert source.length == 42 and counting.converted == 0  # counted, not decoded
    first = first_frames(source, 4)
    assert first.shape == (4, 512, 512, 3) and counting.converted < 16 and source._container is None
    counting.converted = 0
    source, first = video_frame_source(counting)  # the node's call: the first chunk only, for the style check
    assert isinstance(source, VideoFrames) and first.shape == (16, 512, 512, 3) and counting.converted <= 32

    class Unsupported(Counting):
        """A ComfyUI whose decoding asks the container for something the stand-in lacks."""

        def get_components_internal(self, container):
            return container.streams.subtitles

        def get_components(self):
            return self.video.get_components()

    source, first = video_frame_source(Unsupported(videos["running"]))
    assert isinstance(source, TensorFrames) and source.images.shape == (42, 512, 512, 3) and first.shape[0] == 16


@pytest.mark.skipif(not hasattr(InputImpl.VideoFromFile, "get_active_trim_window"),
                    reason="this ComfyUI's VIDEO has no trimming (added after 0.3.75)")
@pytest.mark.parametrize("start,duration", [(0.4, 0.6), (0.4, 0.0), (0.0, 1.0)])
def test_a_trimmed_video_gives_core_trimmed_frames(start, duration):
    """A trimmed VIDEO (start and duration in seconds): the frames core keeps, counted from the packets in display
    order (with B-frames, decode order is not display order: the count must not stop at the first late packet)."""
    video = InputImpl.VideoFromFile(str(RUNNING), start_time=start, duration=duration)
    whole = video.get_components().images
    source = VideoFrames(video, chunk_frames=4)
    assert source.length == whole.shape[0]
    assert torch.equal(torch.cat([source.read(i, min(i + 5, source.length)) for i in range(0, source.length, 5)]),
                       whole)
