"""Decode a LATENT video chunk by chunk with ComfyUI's VAE and encode each chunk straight into a video file.

Core VAE Decode turns the whole video into one float32 IMAGE batch (512x512: 3 MB a frame) before Create Video and
Save Video encode it, which runs out of RAM for long videos. Here at most ``chunk_frames`` frames are decoded at a
time, through core's ``vae.decode`` (its memory management and tiled fallback apply), converted to uint8 exactly as
core's video saving does, and handed to :class:`~magicanimate.video_writer.VideoWriter`; the chunk is dropped before
the next is decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import comfy.model_management
import comfy.utils
import numpy as np
import torch

from ..errors import MagicAnimateError
from ..video_writer import AudioTrack, VideoWriter, read_audio

__all__ = ["check_latent", "chunk_sizes", "to_uint8", "decode_to_video", "audio_track", "video_rate_and_audio",
           "spatial_scale"]


def check_latent(samples: object, where: str) -> torch.Tensor:
    """The LATENT's ``samples`` as a ``(T, C, h, w)`` tensor (frames are the batch), or a :class:`MagicAnimateError`
    naming ``where`` (the node) and the input."""
    latent = samples.get("samples") if isinstance(samples, dict) else None
    if isinstance(latent, torch.Tensor) and latent.is_nested:  # newer ComfyUI: as core VAE Decode, the first entry
        latent = latent.unbind()[0]
    if not isinstance(latent, torch.Tensor):
        raise MagicAnimateError(f"{where}: samples is not a LATENT; connect the LATENT output of MagicAnimate "
                                "Temporal Sample.")
    if latent.ndim != 4 or min(latent.shape[1:]) == 0:
        raise MagicAnimateError(f"{where}: samples has shape {tuple(latent.shape)}; expected a latent video "
                                "(frames, channels, height, width) as Temporal Sample gives.")
    if latent.shape[0] == 0:
        raise MagicAnimateError(f"{where}: samples is an empty latent (0 frames); nothing to save.")
    return latent


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """IMAGE ``(n, H, W, 3)`` floats in 0..1 -> uint8 ``(n, H, W, 3)`` by the operations of core's video saving (times
    255, clamp, truncation), so the encoder gets the very frames core Create Video -> Save Video would give it."""
    return (images * 255).clamp(0, 255).byte().cpu().numpy()


def chunk_sizes(total: int, chunk_frames: int) -> list[int]:
    """Frames per decode call: ``chunk_frames`` each, the rest last, but never a lone last frame when a pair fits.

    The VAE's convolutions round differently for a batch of one than for larger batches (on CPU: 1e-6, enough to flip
    an 8-bit value now and then), and core VAE Decode decodes the video in batches of many frames; a lone last frame
    would be the one frame that can differ from core's. So ``(..., chunk, 1)`` becomes ``(..., chunk - 1, 2)``.
    """
    chunk_frames = max(1, int(chunk_frames))
    sizes = [chunk_frames] * (total // chunk_frames) + ([total % chunk_frames] if total % chunk_frames else [])
    if len(sizes) > 1 and sizes[-1] == 1 and chunk_frames > 2:
        sizes[-2:] = [chunk_frames - 1, 2]
    return sizes


def spatial_scale(vae: object) -> int:
    """Pixels per latent cell of ``vae`` (8 for SD1.5), for naming the file before anything is decoded."""
    ratio = getattr(vae, "spacial_compression_decode", None)
    try:
        return int(ratio()) if callable(ratio) else 8
    except Exception:  # noqa: BLE001 - an exotic VAE: the size only feeds %width%/%height% in the file name
        return 8


def decode_to_video(vae: object, latent: torch.Tensor, chunk_frames: int, path: str | Path, fps: Fraction | float,
                    *, metadata: dict[str, str] | None = None, audio: AudioTrack | None = None,
                    writer_factory: Callable[..., VideoWriter] = VideoWriter,
                    where: str = "MagicAnimate Save Video") -> tuple[Path, int]:
    """Decode ``latent`` ``(T, C, h, w)`` in chunks of ``chunk_frames`` frames and encode them into ``path``.

    Returns (the finished file, its frame count). ComfyUI's interrupt is honoured before each chunk; an interrupt or
    any error removes the temporary file and leaves nothing under ``path``; so do frames the VAE decodes to NaN or
    infinity (a :class:`MagicAnimateError` naming ``where``). One progress step per chunk.
    """
    total = int(latent.shape[0])
    sizes = chunk_sizes(total, chunk_frames)
    bar = comfy.utils.ProgressBar(len(sizes))
    writer: VideoWriter | None = None
    start = 0
    try:
        for size in sizes:
            comfy.model_management.throw_exception_if_processing_interrupted()
            images = vae.decode(latent[start:start + size])
            start += size
            if images.ndim == 5:  # video VAEs: (batch, frames, H, W, 3), flattened as core VAE Decode does
                images = images.reshape(-1, *images.shape[-3:])
            if not bool(torch.isfinite(images).all()):  # NaN would be encoded as black frames
                raise MagicAnimateError(f"{where}: the VAE decoded frames {start - size}..{start - 1} to NaN or "
                                        "infinite values (the latent or an fp16 VAE overflowed); nothing was saved. "
                                        "Try the VAE in fp32 (--fp32-vae) or check the sampler's output.")
            frames = to_uint8(images)
            del images  # the float chunk goes before the next one is decoded
            if writer is None:  # the size is known once the VAE has decoded something
                writer = writer_factory(path, frames.shape[2], frames.shape[1], fps, metadata=metadata, audio=audio)
            writer.write(frames)
            del frames
            bar.update(1)
        comfy.model_management.throw_exception_if_processing_interrupted()
        return writer.finish(), total
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def audio_track(audio: dict | None) -> AudioTrack | None:
    """ComfyUI AUDIO ``{"waveform": (batch, channels, samples), "sample_rate": int}`` -> the first item's track."""
    if not audio:
        return None
    waveform = audio.get("waveform")
    if not isinstance(waveform, torch.Tensor) or waveform.ndim != 3 or waveform.shape[-1] == 0:
        return None
    return AudioTrack(waveform[0].float().cpu().contiguous().numpy(), int(audio["sample_rate"]))


def video_rate_and_audio(video: object) -> tuple[Fraction, AudioTrack | None]:
    """Frame rate and sound track of a ComfyUI VIDEO, without decoding its frames when it is backed by a file."""
    from comfy_api.latest import InputImpl

    rate = Fraction(video.get_frame_rate())
    if isinstance(video, InputImpl.VideoFromFile):
        start, duration = 0.0, 0.0
        if hasattr(video, "get_active_trim_window"):  # newer ComfyUI: a trimmed VIDEO keeps its file
            start, duration = video.get_active_trim_window()
        return rate, read_audio(video.get_stream_source(), start, duration)
    return rate, audio_track(video.get_components().audio)  # in memory already: its images are tensors
