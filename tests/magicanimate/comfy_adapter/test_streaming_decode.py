"""Chunked decoding into a video file: the frames handed to the encoder are core's, bit for bit, and memory holds one
chunk of decoded frames at a time, whatever the video's length."""

from __future__ import annotations

import weakref
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from magicanimate.comfy_adapter import streaming_decode
from magicanimate.comfy_adapter.streaming_decode import decode_to_video


@pytest.fixture(scope="module")
def random_vae():
    """ComfyUI's SD1.5 VAE (full size, random fp32 weights) built in memory, as core's loader builds it."""
    import comfy.sd

    from devtools.random_weights.sd15_files import _random_tensor, sd_vae_shapes

    gen = torch.Generator().manual_seed(3)
    sd = {k: _random_tensor(k, s, gen) for k, s in sd_vae_shapes().items()}
    return comfy.sd.VAE(sd=sd)


@pytest.fixture
def encoded(monkeypatch):
    """Every RGB array handed to PyAV's encoder (``av.VideoFrame.from_ndarray``), by core's saving or ours."""
    seen: list[np.ndarray] = []
    original = av.VideoFrame.from_ndarray

    def record(array, *args, **kwargs):
        seen.append(np.array(array, copy=True))
        return original(array, *args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", staticmethod(record))
    return seen


def test_encoded_frames_equal_core_vae_decode_create_video_save_video_bit_for_bit(random_vae, encoded, tmp_path):
    from comfy_api.latest import InputImpl, Types

    import nodes as core_nodes

    latent = torch.randn(7, 4, 4, 6, generator=torch.Generator().manual_seed(0)) * 3  # 7 frames: not a multiple of 3
    # core: VAE Decode -> Create Video (8-bit) -> Save Video's save_to, as the three nodes run it
    images = core_nodes.VAEDecode().decode(random_vae, {"samples": latent})[0]
    video = InputImpl.VideoFromComponents(Types.VideoComponents(images=images, audio=None, frame_rate=Fraction(25)))
    video.save_to(str(tmp_path / "core.mp4"))
    core_frames, encoded[:] = list(encoded), []
    assert len(core_frames) == 7 and core_frames[0].shape == (32, 48, 3) and core_frames[0].dtype == np.uint8
    assert len({f.tobytes() for f in core_frames}) > 1  # frames differ: a mix-up would show

    path, count = decode_to_video(random_vae, latent, 3, tmp_path / "ours.mp4", 25)
    assert count == 7 and path.is_file()
    assert len(encoded) == 7
    for i, (ours, core) in enumerate(zip(encoded, core_frames, strict=True)):
        assert ours.dtype == np.uint8 and np.array_equal(ours, core), f"frame {i} differs from core's"


class _RecordingVAE:
    """A stand-in VAE: ``decode`` ``(n, 4, h, w)`` -> IMAGE ``(n, 8h, 8w, 3)``; records each batch size and how many
    decoded chunks (float tensors, or the uint8 frames made of them) are still alive when the next one is decoded."""

    def __init__(self, alive_uint8: list) -> None:
        self.batches: list[int] = []
        self.alive_at_decode: list[int] = []
        self._decoded: list[weakref.ref] = []
        self._alive_uint8 = alive_uint8

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        alive = sum(ref() is not None for ref in self._decoded + self._alive_uint8)
        self.alive_at_decode.append(alive)
        self.batches.append(int(latent.shape[0]))
        up = latent[:, :3].repeat_interleave(8, -1).repeat_interleave(8, -2)
        images = torch.sigmoid(up).movedim(1, -1).contiguous()
        self._decoded.append(weakref.ref(images))
        return images


def test_frames_decoded_to_nan_are_refused_and_leave_no_file(tmp_path):
    from magicanimate.errors import MagicAnimateError

    latent = torch.zeros(5, 4, 8, 8)
    latent[3] = float("nan")  # in the second chunk: the first one is already in the temporary file
    with pytest.raises(MagicAnimateError, match=r"Save Video: the VAE decoded frames 3\.\.4 to NaN"):
        decode_to_video(_RecordingVAE([]), latent, 3, tmp_path / "out.mp4", 25)
    assert list(tmp_path.iterdir()) == []


class _WeakWriter:
    """A writer that keeps only weak references to the frames it is given."""

    def __init__(self, refs: list, sizes: list) -> None:
        self.refs, self.sizes = refs, sizes

    def write(self, frames: np.ndarray) -> None:
        self.refs.append(weakref.ref(frames))
        self.sizes.append(frames.shape[0])

    def finish(self):
        return "done"

    def abort(self) -> None:
        pass


def test_memory_holds_at_most_one_chunk_of_decoded_frames_for_a_long_video(monkeypatch):
    import comfy.utils

    bars = []

    class Bar:
        def __init__(self, total: int) -> None:
            self.total, self.done = total, 0
            bars.append(self)

        def update(self, value: int) -> None:
            self.done += value

    monkeypatch.setattr(comfy.utils, "ProgressBar", Bar)
    refs, sizes = [], []
    vae = _RecordingVAE(refs)
    latent = torch.randn(300, 4, 1, 1)
    result = decode_to_video(vae, latent, 16, "unused.mp4", 25,
                             writer_factory=lambda *a, **k: _WeakWriter(refs, sizes))
    assert result == ("done", 300)
    assert max(vae.batches) == 16 and sum(vae.batches) == 300 and len(vae.batches) == 19
    assert sizes == vae.batches
    # when a chunk is decoded, no earlier chunk (float or uint8) is still held
    assert vae.alive_at_decode == [0] * 19
    assert [(b.total, b.done) for b in bars] == [(19, 19)]  # one progress step per chunk


def test_chunks_never_end_with_a_lone_frame_where_a_pair_fits():
    assert streaming_decode.chunk_sizes(7, 3) == [3, 2, 2]
    assert streaming_decode.chunk_sizes(300, 16) == [16] * 18 + [12]
    assert streaming_decode.chunk_sizes(17, 16) == [15, 2]
    assert streaming_decode.chunk_sizes(1, 16) == [1] and streaming_decode.chunk_sizes(3, 1) == [1, 1, 1]
    assert streaming_decode.chunk_sizes(5, 2) == [2, 2, 1]  # no pair fits in 2 without a lone frame


def test_to_uint8_truncates_as_core_saving_does():
    images = torch.tensor([0.0, 0.5, 0.999, 1.0, 1.5, -0.2, 0.2]).reshape(1, 1, 7, 1).expand(1, 1, 7, 3)
    out = streaming_decode.to_uint8(images)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 7, 3)
    assert out[0, 0, :, 0].tolist() == [0, 127, 254, 255, 255, 0, 51]
