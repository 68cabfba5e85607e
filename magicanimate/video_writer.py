"""Write a video file frame chunk by frame chunk with PyAV, appearing under its final name only when complete.

A long video does not fit in RAM as one float IMAGE batch (512x512: 3 MB a frame), so frames arrive in chunks of
uint8 RGB and are encoded as they come. The file is written under a hidden temporary name in the destination folder
and renamed when finished: an interrupted or failed run leaves neither a half-written video under the final name nor
the temporary file. Imports no ComfyUI.
"""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["AudioTrack", "VideoWriter", "read_audio"]

#: Colour tags of the encoded stream: BT.709 primaries and matrix, the sRGB transfer, limited ("MPEG") range; the
#: values ComfyUI's own video saving uses for 8-bit sRGB video (numbers from ISO/IEC 23091-2, as FFmpeg's enums).
_BT709 = 1
_SRGB_TRC = 13
_MPEG_RANGE = 1
#: Channel count -> PyAV layout name; other counts keep their first two channels as stereo (as ComfyUI does).
_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


@dataclass(frozen=True)
class AudioTrack:
    """A sound track: ``samples`` float32 ``(channels, n)`` in -1..1 at ``sample_rate`` Hz, starting with frame 0."""

    samples: np.ndarray
    sample_rate: int


def read_audio(source: str | os.PathLike | object, start_s: float = 0.0, duration_s: float = 0.0) -> AudioTrack | None:
    """The first audio stream of a media file (a path or a file-like object) as an :class:`AudioTrack`, from
    ``start_s`` seconds for ``duration_s`` seconds (0: to the end); None when it has no audio. Decodes the audio only,
    never the video frames."""
    if hasattr(source, "seek"):
        source.seek(0)
    with av.open(source, mode="r") as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        parts, rate = [], None
        for frame in container.decode(stream):
            rate = rate or frame.sample_rate
            block = frame.to_ndarray()
            if frame.format.is_planar:
                parts.append(block.reshape(len(frame.layout.channels), -1))
            else:  # packed: samples interleaved in one row
                parts.append(block.reshape(-1, len(frame.layout.channels)).T)
    if not parts:
        return None
    samples = np.concatenate(parts, axis=1).astype(np.float32, copy=False)
    if np.issubdtype(parts[0].dtype, np.integer):  # integer PCM -> -1..1, as a float track
        samples = samples / float(np.iinfo(parts[0].dtype).max)
    first = int(round(max(start_s, 0.0) * rate))
    last = samples.shape[1] if duration_s <= 0 else first + int(round(duration_s * rate))
    return AudioTrack(np.ascontiguousarray(samples[:, first:last]), int(rate))


class VideoWriter:
    """An H.264 (yuv420p) mp4 being written; use as a context manager, or call :meth:`finish` / :meth:`abort`.

    ``fps`` is frames per second; ``metadata`` values are stored as container tags (ComfyUI stores the prompt and
    workflow as JSON there); ``audio`` is muxed after the video, cut to the video's length.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float | Fraction, *,
                 codec: str = "h264", pix_fmt: str = "yuv420p", metadata: dict[str, str] | None = None,
                 audio: AudioTrack | None = None) -> None:
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"video size {width}x{height}: yuv420p needs a positive, even width and height")
        if not fps or not math.isfinite(float(fps)) or float(fps) <= 0:
            raise ValueError(f"frame rate {fps}: it must be a positive number of frames per second")
        self.path = Path(path)
        # Hidden (leading dot) and in the same folder, so the final rename is atomic and listings skip it.
        self.temp_path = self.path.with_name(f".{self.path.stem}.{uuid.uuid4().hex[:8]}.partial{self.path.suffix}")
        self.width, self.height, self.frames = int(width), int(height), 0
        # Millisecond precision, as ComfyUI's saving does: 29.97 stays 29970/1000.
        self.fps = fps if isinstance(fps, Fraction) else Fraction(round(float(fps) * 1000), 1000)
        self.audio = audio
        self._done = False
        self._container = av.open(str(self.temp_path), mode="w", format="mp4",
                                  options={"movflags": "use_metadata_tags+faststart"})
        try:
            for key, value in (metadata or {}).items():
                self._container.metadata[key] = value
            self._video = self._container.add_stream(codec, rate=self.fps)
            self._video.width, self._video.height, self._video.pix_fmt = self.width, self.height, pix_fmt
            self._pix_fmt = pix_fmt
            _tag_colours(self._video.codec_context)
            # Every stream must exist before the first packet is muxed (the mp4 header lists them).
            self._audio_stream = None
            if audio is not None and audio.samples.size:
                self._audio_samples = _channels(audio.samples)
                self._audio_stream = self._container.add_stream("aac", rate=int(audio.sample_rate),
                                                                layout=_LAYOUTS[self._audio_samples.shape[0]])
        except BaseException:
            self.abort()
            raise

    def write(self, frames: np.ndarray) -> None:
        """Encode ``frames``: uint8 RGB ``(n, height, width, 3)`` (or one ``(height, width, 3)`` frame)."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"frames {frames.dtype} {frames.shape}: expected uint8 "
                             f"(n, {self.height}, {self.width}, 3)")
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            # The BT.709 matrix the stream is tagged with (swscale's default would be BT.601).
            frame = frame.reformat(format=self._pix_fmt, dst_colorspace=_BT709)
            _tag_colours(frame)
            self._container.mux(self._video.encode(frame))
            self.frames += 1

    def finish(self) -> Path:
        """Flush the encoder, mux the audio (cut to the video's duration), close, and rename to :attr:`path`."""
        try:
            if self.frames == 0:
                raise ValueError("no frames were written")
            self._container.mux(self._video.encode(None))
            if self._audio_stream is not None:
                self._mux_audio()
            self._container.close()
            os.replace(self.temp_path, self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file; the final name is never created. Safe to call twice."""
        if self._done:
            return
        self._done = True
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - a broken encoder must not keep the temporary file from being removed
            pass
        self.temp_path.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._done:
            self.abort()

    def _mux_audio(self) -> None:
        rate = int(self.audio.sample_rate)
        # Samples covering the video's duration, rounded up so the last frame still has sound.
        keep = math.ceil(rate * self.frames / self.fps)
        samples = np.ascontiguousarray(self._audio_samples[:, :keep])
        layout = _LAYOUTS[samples.shape[0]]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
        frame.sample_rate, frame.pts = rate, 0
        self._container.mux(self._audio_stream.encode(frame))
        self._container.mux(self._audio_stream.encode(None))


def _channels(samples: np.ndarray) -> np.ndarray:
    """``samples`` as float32 ``(channels, n)`` with a channel count PyAV has a layout for."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[None]
    return samples if samples.shape[0] in _LAYOUTS else samples[:2]


def _tag_colours(target: object) -> None:
    """Tag a codec context or frame as BT.709 / sRGB / limited range, where this PyAV has the attributes."""
    for name, value in (("color_primaries", _BT709), ("color_trc", _SRGB_TRC), ("colorspace", _BT709),
                        ("color_range", _MPEG_RANGE)):
        try:
            setattr(target, name, value)
        except (AttributeError, TypeError, ValueError):
            pass  # older PyAV: the stream is still valid, only untagged
