"""Core ComfyUI's VIDEO (from Load Video) as a pose :class:`~magicanimate.pose_frames.FrameSource`, decoded a chunk
at a time through core's own frame conversion.

Core Get Video Components decodes the whole file into one float32 IMAGE. Versions convert differently (ComfyUI
0.3.75: ``rgb24 / 255``; 0.33: planar float32 ``gbrpf32le`` with alignment padding for widths that are not a
multiple of 32, rotation, trimming), and the hints must equal the IMAGE path's bit for bit. So frames are not
converted here: core's ``get_components_internal`` runs on a stand-in container (:class:`_ChunkContainer`) whose
video packets continue, call after call, from one open file and one decoder. Each call returns the next few frames
exactly as core's whole-file call would have returned them, with no seeking and no decoding twice within a pass.
A VIDEO that is not a file (e.g. Create Video's) already holds its frames and is read from them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import av
import torch
from comfy_api.latest import Input

from ..errors import MagicAnimateError
from ..pose_frames import CHUNK_FRAMES, FrameSource, TensorFrames

__all__ = ["VideoFrames", "video_frame_source", "first_frames"]

log = logging.getLogger("MagicAnimate")

#: Core's VIDEO type (``VideoFromFile`` from Load Video, ``VideoFromComponents`` from Create Video, ...).
VideoInput = Input.Video


class _Streams:
    """The stand-in's ``streams``: the video stream only (core then decodes no audio)."""

    def __init__(self, video: av.VideoStream) -> None:
        self.video, self.audio = [video], []

    def __iter__(self) -> Iterator:
        return iter(self.video)

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int):
        return self.video[i]


class _ChunkContainer:
    """What core's ``get_components_internal`` reads instead of a whole file: the next ``packets`` video packets.

    ``demux``/``decode`` continue the shared packet iterator (the decoder keeps its state between calls, so frames
    come out as in one pass over the file); ``seek`` does nothing (the real container was positioned once).
    """

    def __init__(self, container: av.container.InputContainer, stream: av.VideoStream, packets: Iterator,
                 count: int) -> None:
        self.streams, self.metadata = _Streams(stream), container.metadata
        self.format, self.duration = container.format, container.duration
        self._packets, self._count, self.ended = packets, count, False

    def demux(self, *streams, **kwargs) -> Iterator:
        for _ in range(self._count):
            packet = next(self._packets, None)
            if packet is None:
                self.ended = True
                return
            yield packet

    def decode(self, *args, **kwargs) -> Iterator:
        for packet in self.demux():
            yield from packet.decode()

    def seek(self, *args, **kwargs) -> None:
        pass


def _trim(video: VideoInput) -> tuple[float, float]:
    """(start seconds, duration seconds, 0 = to the end) of a trimmed VIDEO (ComfyUI 0.33); (0, 0) otherwise."""
    window = getattr(video, "get_active_trim_window", None)
    return tuple(float(v) for v in window()) if window is not None else (0.0, 0.0)


class VideoFrames:
    """A :class:`FrameSource` over a core ``VideoFromFile``: frames ``[start, stop)`` decoded on request.

    Reading forward continues one decoding pass (a chunk of ``chunk_frames`` packets at a time); reading behind
    the pass restarts it from the file's start (once per model evaluation: windows advance through the video). At
    most one chunk of decoded frames is held beyond what was asked for. ``length`` is counted without decoding
    (container metadata, else one pass over the packets); a file that then decodes to another count is refused.
    """

    def __init__(self, video: VideoInput, chunk_frames: int = CHUNK_FRAMES) -> None:
        self.video, self.chunk_frames = video, max(1, int(chunk_frames))
        self.start_s, self.duration_s = _trim(video)
        self.length = self._count()
        self._container = None
        self._packets: Iterator | None = None
        self._position = 0  # index of the first frame in self._pending
        self._pending: torch.Tensor | None = None
        self._ended = False
        self.passes = 0  # decoding passes started (tests count restarts)

    def _open(self) -> tuple[av.container.InputContainer, av.VideoStream]:
        container = av.open(self.video.get_stream_source(), mode="r")
        if not container.streams.video:
            container.close()
            raise MagicAnimateError("PoseControl: pose_frames is a VIDEO without a video stream; connect Load Video "
                                    "with a DensePose video file.")
        return container, container.streams.video[0]

    def _bounds(self, stream: av.VideoStream) -> tuple[int, int | None]:
        """The trim window in the stream's pts, as core computes it (``None``: to the end)."""
        start = int(self.start_s / stream.time_base)
        end = int((self.start_s + self.duration_s) / stream.time_base) if self.duration_s else None
        return start, end

    def _count(self) -> int:
        container, stream = self._open()
        try:
            if stream.frames and not self.start_s and not self.duration_s:
                return int(stream.frames)  # the container's frame index (mp4, mov): nothing to read
            start, end = self._bounds(stream)
            count = 0
            for packet in container.demux(stream):  # packets only, no decoding; nothing is kept
                # Decode order is not display order (B-frames): every packet is looked at, none ends the count.
                if packet.pts is not None and packet.size and start <= packet.pts and (end is None or packet.pts < end):
                    count += 1
            return count
        finally:
            container.close()

    def _restart(self) -> None:
        self.close()
        self._container, stream = self._open()
        start, _ = self._bounds(stream)
        if start:
            self._container.seek(start, stream=stream)  # as core does before decoding a trimmed video
        self._packets = iter(self._container.demux(stream))
        self._position, self._pending, self._ended = 0, None, False
        self.passes += 1

    def _decode_chunk(self) -> torch.Tensor | None:
        """The next frames of the pass as core converts them, ``(n, H, W, 3)`` float32, or ``None`` at the end."""
        while not self._ended:
            chunk = _ChunkContainer(self._container, self._container.streams.video[0], self._packets,
                                    self.chunk_frames)
            images = self.video.get_components_internal(chunk).images
            self._ended = chunk.ended
            if images.ndim == 4 and images.shape[0] > 0:
                return images
        return None

    def read(self, start: int, stop: int) -> torch.Tensor:
        if not 0 <= start < stop <= self.length:
            raise IndexError(f"frames [{start}, {stop}) outside a video of {self.length} frames")
        if self._packets is None or start < self._position:
            self._restart()
        parts: list[torch.Tensor] = []
        pos = self._position
        pending = self._pending
        while pos < stop:
            if pending is None or pending.shape[0] == 0:
                pending = self._decode_chunk()
                if pending is None:
                    self.close()
                    raise MagicAnimateError(
                        f"PoseControl: the pose VIDEO decoded to {pos} frames, but its container said "
                        f"{self.length}; connect Load Video -> Get Video Components -> pose_frames instead (decodes "
                        "the whole video into memory), or re-encode the video.")
            skip = max(0, start - pos)
            take = min(pending.shape[0], stop - pos)
            if take > skip:
                parts.append(pending[skip:take])
            pending, pos = pending[take:], pos + take
        self._position, self._pending = pos, pending
        if stop == self.length:
            self.close()  # a pass that reached the end holds no file; the next read starts again
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._packets, self._pending = None, None, None
        self._position, self._ended = 0, False


def video_frame_source(video: VideoInput) -> tuple[FrameSource, torch.Tensor]:
    """A pose frame source for a core VIDEO and its first frames ``(n, H, W, 3)`` (at most a chunk, for the DensePose
    style check): decoded a chunk at a time when it is a file core decodes (``get_components_internal`` and
    ``get_stream_source``), else its frames as core hands them out whole. A ComfyUI whose decoding needs more of the
    container than the stand-in offers gets the whole-video path too, with a warning (right frames, more RAM)."""
    if hasattr(video, "get_components_internal") and hasattr(video, "get_stream_source"):
        source = VideoFrames(video)
        try:
            return source, first_frames(source)
        except (AttributeError, TypeError) as e:
            source.close()
            log.warning("PoseControl: this ComfyUI's VIDEO cannot be decoded a chunk at a time (%s); decoding the "
                        "whole pose video into memory instead.", e)
    source = TensorFrames(video.get_components().images)
    return source, source.images[:CHUNK_FRAMES]


def first_frames(source: FrameSource, count: int = CHUNK_FRAMES) -> torch.Tensor:
    """The first ``count`` frames of ``source`` (a look at the video's style without decoding all of it); the source
    holds nothing open afterwards (the node's output may wait in ComfyUI's cache for a long time)."""
    if source.length == 0:
        return torch.zeros(0, 1, 1, 3)
    try:
        return source.read(0, min(source.length, count))
    finally:
        source.close()
