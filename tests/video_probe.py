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
