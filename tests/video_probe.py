"""What a player sees of a video file (for the tests of the video writer and of the node that uses it)."""

from __future__ import annotations

import av


def probe(path) -> dict:
    """Video codec, size, rate, decoded frame count, pixel format, container tags, audio channels and seconds."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        info = {"codec": video.codec_context.name, "size": (video.width, video.height), "rate": video.average_rate,
                "pix_fmt": video.codec_context.pix_fmt, "tags": dict(container.metadata), "audio_s": None}
        if container.streams.audio:
            audio = container.streams.audio[0]
            info["audio_s"] = float(audio.duration * audio.time_base)
            info["audio_channels"] = audio.codec_context.channels
        info["frames"] = sum(1 for _ in container.decode(video=0))
    return info


def write_video(path, frames, rate: int = 25, codec: str = "libx264", pix_fmt: str = "yuv420p") -> None:
    """Encode IMAGE frames ``(n, H, W, 3)`` in [0, 1] (even H and W for yuv420p) into a video file with PyAV, with
    the encoder's default B-frames (so decoding has a delay, as real files have)."""
    import numpy as np
    import torch

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for frame in frames:
            rgb = (frame.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
