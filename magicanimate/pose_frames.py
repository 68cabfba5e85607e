"""Pose frames read a chunk at a time, and the DensePose ControlNet hints made from them per window.

An IMAGE batch holds the whole driving video in float32 (512x512: 3 MB a frame). A :class:`FrameSource` instead
hands out frames ``[start, stop)`` on request, mostly in increasing order, so a video file can be decoded one chunk
at a time. :class:`StreamedHints` turns the frames a window needs into ControlNet hints exactly as the IMAGE path
does (``fit_images``, then the hint layout and dtype of ``pose_residuals.prepare_hints``), keeping only the last few
chunks: hints need memory for a chunk or two, not for the video (docs/ARCHITECTURE.md, "DensePose ControlNet, once
per frame").
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, runtime_checkable

import torch

from .frames import fit_images

__all__ = ["FrameSource", "TensorFrames", "StreamedHints", "frame_count", "hint_layout", "CHUNK_FRAMES"]

#: Frames decoded, fitted and converted at a time: one reference window, so a window's new frames are one decode.
CHUNK_FRAMES = 16


@runtime_checkable
class FrameSource(Protocol):
    """A pose video read on demand: ``length`` frames of ``(H, W, 3)`` float32 in [0, 1]."""

    length: int

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Frames ``[start, stop)`` as ``(stop - start, H, W, 3)`` float32; cheapest when called in increasing
        order."""
        ...

    def close(self) -> None:
        """Release what reading holds (open files, decoded chunks); reading again reopens."""
        ...


class TensorFrames:
    """A :class:`FrameSource` over frames already in memory, ``(T, H, W, C)`` with C in {1, 3, 4}."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images
        self.length = int(images.shape[0])

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self.images[start:stop]

    def close(self) -> None:
        pass


def hint_layout(frames: torch.Tensor) -> torch.Tensor:
    """Pose frames ``(T, H, W, C)`` -> ControlNet hint rows ``(T, 3, H, W)`` float32 (the first three channels,
    channels first): the one conversion of both the IMAGE path's hints and :class:`StreamedHints`."""
    return frames[..., :3].movedim(-1, 1).to(torch.float32)


def frame_count(frames: torch.Tensor | FrameSource) -> int:
    """Number of pose frames of an IMAGE batch ``(T, H, W, C)`` or a :class:`FrameSource`."""
    return int(frames.shape[0]) if isinstance(frames, torch.Tensor) else int(frames.length)


class StreamedHints:
    """ControlNet hints ``(n, 3, height, width)`` in ``dtype`` for any frame ids of a video of ``num_frames`` frames
    (the padded length), made a chunk of :data:`CHUNK_FRAMES` source frames at a time.

    Frame ``i`` is source frame ``min(i, length - 1)``: past the end the last frame repeats, as the IMAGE path's
    edge padding does. Each chunk is fitted with ``fit_images(..., width, height, fit)`` and cast like
    ``prepare_hints`` does (per-frame operations, so equal bit for bit to the whole-video hints). The last
    ``keep_chunks`` chunks are kept (least recently used dropped): windows overlap and advance through the video, so
    within one model evaluation each chunk is read once; the next evaluation reads the video again from its start
    rather than keeping every frame's hint.

    ``prefetch``: every read runs on one worker thread, and taking chunk k starts reading chunk k + 1 there, so the
    next window's frames decode while the current window runs on the device (decoding and fitting a 512x512 frame
    takes several milliseconds of CPU). One more chunk is held while it waits.
    """

    def __init__(self, source: FrameSource, num_frames: int, height: int, width: int, fit: str,
                 dtype: torch.dtype, keep_chunks: int = 2, chunk_frames: int = CHUNK_FRAMES,
                 prefetch: bool = True) -> None:
        self.source, self.num_frames = source, int(num_frames)
        self.height, self.width, self.fit, self.dtype = int(height), int(width), fit, dtype
        self.keep_chunks, self.chunk_frames = max(1, int(keep_chunks)), max(1, int(chunk_frames))
        self.chunks: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.reads = 0  # chunks read and fitted (tests and benchmarks count the work)
        self.last_chunk = (self.source.length - 1) // self.chunk_frames
        # One worker: the source is only ever read from that thread, one chunk after another.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pose-hints") if prefetch else None
        self._ahead: dict[int, Future] = {}

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The shape the whole-video hints would have, ``(num_frames, 3, height, width)`` (never allocated)."""
        return (self.num_frames, 3, self.height, self.width)

    def _read(self, k: int) -> torch.Tensor:
        """Chunk ``k``'s hints ``(n, 3, height, width)``: read, fitted and cast (on the worker when prefetching)."""
        start = k * self.chunk_frames
        stop = min(self.source.length, start + self.chunk_frames)
        fitted = fit_images(self.source.read(start, stop), self.width, self.height, self.fit)
        # As prepare_hints: the hint layout, then the ControlNet's compute dtype.
        hints = hint_layout(fitted).contiguous().to(self.dtype)
        self.reads += 1
        return hints

    def _chunk(self, k: int) -> torch.Tensor:
        if k in self.chunks:
            self.chunks.move_to_end(k)
            return self.chunks[k]
        ahead = self._ahead.pop(k, None)
        if ahead is not None:
            hints = ahead.result()
        elif self._pool is not None:
            hints = self._pool.submit(self._read, k).result()
        else:
            hints = self._read(k)
        self.chunks[k] = hints
        while len(self.chunks) > self.keep_chunks:
            self.chunks.popitem(last=False)
        nxt = k + 1
        if self._pool is not None and nxt <= self.last_chunk and nxt not in self.chunks and nxt not in self._ahead:
            self._ahead[nxt] = self._pool.submit(self._read, nxt)
        return hints

    def take(self, frame_ids: list[int]) -> torch.Tensor:
        """Hints of ``frame_ids`` (indices into the padded video), ``(len(frame_ids), 3, height, width)``."""
        if not frame_ids or max(frame_ids) >= self.num_frames or min(frame_ids) < 0:
            raise IndexError(f"hint frames {frame_ids} outside a video of {self.num_frames} frames")
        last = self.source.length - 1
        rows = []
        for i in frame_ids:
            s = min(int(i), last)
            rows.append(self._chunk(s // self.chunk_frames)[s % self.chunk_frames])
        return torch.stack(rows)

    def close(self) -> None:
        """Drop the kept chunks, wait for a chunk being read ahead, and let the source release its file; taking
        hints again starts over (a new worker when prefetching)."""
        for ahead in self._ahead.values():
            ahead.cancel()
        self._ahead.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="pose-hints")
        self.chunks.clear()
        self.source.close()
