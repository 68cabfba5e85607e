"""The PyAV video writer: an H.264 mp4 with the frames, size, rate, tags and sound asked for, that appears under its
final name only when finished and leaves nothing behind when aborted."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from video_probe import probe

from magicanimate.video_writer import AudioTrack, VideoWriter, read_audio


def _frames(n: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def _tone(seconds: float, rate: int = 16000, channels: int = 2) -> AudioTrack:
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    return AudioTrack(np.stack([0.3 * np.sin(2 * np.pi * 440 * (c + 1) * t) for c in range(channels)]), rate)


def test_chunks_make_one_h264_mp4_with_the_frames_size_rate_tags_and_trimmed_audio(tmp_path):
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, 64, 48, 12.5, metadata={"prompt": '{"1": {}}'}, audio=_tone(9.0)) as writer:
        for chunk in (_frames(30), _frames(30, seed=1), _frames(11, seed=2)):
            writer.write(chunk)
        # while writing (x264 has written packets), only the hidden temporary file is there
        assert [p.name for p in tmp_path.iterdir()] == [writer.temp_path.name] and writer.temp_path.name[0] == "."
        assert writer.finish() == path
    info = probe(path)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["size"] == (64, 48) and info["rate"] == Fraction(25, 2) and info["frames"] == 71
    assert info["tags"].get("prompt") == '{"1": {}}'
    # 9 s of sound cut to the 71 / 12.5 = 5.68 s of video (one AAC frame of 64 ms of slack)
    assert info["audio_s"] == pytest.approx(71 / 12.5, abs=0.07) and info["audio_channels"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_without_audio_the_file_has_no_audio_stream(tmp_path):
    with VideoWriter(tmp_path / "a.mp4", 32, 32, 25) as writer:
        writer.write(_frames(3, 32, 32))
        writer.finish()
    info = probe(tmp_path / "a.mp4")
    assert info["audio_s"] is None and info["frames"] == 3 and info["rate"] == 25


def test_an_error_while_writing_or_abort_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError), VideoWriter(tmp_path / "b.mp4", 32, 32, 25) as writer:
        writer.write(_frames(60, 32, 32))  # more than x264 buffers, so packets reach the file
        assert [p.name for p in tmp_path.iterdir()] == [writer.temp_path.name]  # the temporary file is written...
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []  # ...and is gone, and no final file

    writer = VideoWriter(tmp_path / "c.mp4", 32, 32, 25)
    writer.write(_frames(2, 32, 32))
    writer.abort()
    writer.abort()  # twice is fine
    assert list(tmp_path.iterdir()) == []


def test_finishing_without_frames_or_bad_frames_are_refused_and_leave_nothing(tmp_path):
    writer = VideoWriter(tmp_path / "d.mp4", 32, 32, 25)
    with pytest.raises(ValueError, match="uint8"):
        writer.write(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="no frames"):
        writer.finish()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "e.mp4", 33, 32, 25)
    with pytest.raises(ValueError, match="frame rate"):
        VideoWriter(tmp_path / "e.mp4", 32, 32, 0)
    assert list(tmp_path.iterdir()) == []


def test_read_audio_gets_the_sound_of_a_file_from_an_offset(tmp_path):
    with VideoWriter(tmp_path / "f.mp4", 32, 32, 10, audio=_tone(3.0, channels=1)) as writer:
        writer.write(_frames(20, 32, 32))
        writer.finish()
    track = read_audio(str(tmp_path / "f.mp4"))
    assert track.sample_rate == 16000 and track.samples.dtype == np.float32 and track.samples.shape[0] == 1
    assert track.samples.shape[1] / 16000 == pytest.approx(2.0, abs=0.15)  # the 2 s of video, plus AAC padding
    later = read_audio(str(tmp_path / "f.mp4"), start_s=0.5, duration_s=1.0)
    assert later.samples.shape[1] == 16000
    with VideoWriter(tmp_path / "g.mp4", 32, 32, 10) as writer:
        writer.write(_frames(2, 32, 32))
        writer.finish()
    assert read_audio(str(tmp_path / "g.mp4")) is None
