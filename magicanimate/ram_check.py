"""How much RAM a TemporalSample run needs, checked up front so an oversized request fails in a second, not an hour in.

The per-window work (UNet, appearance encoder, ControlNet) needs the same memory for 16 or 10,000 frames: windows are
denoised one after another and the ControlNet residuals of a frame are dropped once no later window needs them. What
grows with the video length is held for the whole run, in CPU RAM:

- the pose frames fitted to the working size (when they have another size) and the ControlNet hints made from them,
  ``F x H x W x 3`` float32 each (not for pose frames read from a VIDEO: those are fitted a chunk at a time);
- the latent video, its noise and the sampler's working copies (a few ``F x 4 x H/8 x W/8`` float32 tensors);
- the decoded frames the downstream VAE Decode produces, ``F x H x W x 3`` float32.
"""

from __future__ import annotations

from .errors import MagicAnimateError

__all__ = ["LATENT_COPIES", "run_memory_parts", "available_ram_bytes", "check_run_fits", "format_bytes"]

#: Latent-sized float32 tensors alive at the sampler's peak with the reference DDIM, as counted by
#: tests/magicanimate/comfy_adapter/test_sampler_memory.py (docs/ARCHITECTURE.md, "What grows with the number of
#: frames"): noise, core's starting x, x, denoised, the Euler difference, two fusion sums.
LATENT_COPIES = 7


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1e3:.1f} kB"


def run_memory_parts(frames: int, padded_frames: int, width: int, height: int, pose_resized: bool = True,
                     latent_channels: int = 4, pose_streamed: bool = False) -> dict[str, int]:
    """Bytes per item for ``frames`` output frames (``padded_frames`` denoised) at ``width`` x ``height`` pixels;
    ``pose_streamed``: the pose frames come from a VIDEO and are fitted per chunk (no whole-video copies)."""
    pixels = int(width) * int(height)
    latent = (int(width) // 8) * (int(height) // 8) * int(latent_channels) * 4
    return {
        "pose frames at the working size": int(frames) * pixels * 3 * 4 if pose_resized and not pose_streamed else 0,
        "ControlNet hints": 0 if pose_streamed else int(padded_frames) * pixels * 3 * 4,
        "latents and noise": int(padded_frames) * latent * LATENT_COPIES,
        "decoded output frames": int(frames) * pixels * 3 * 4,
    }


def available_ram_bytes() -> int:
    """RAM the OS can give this process now (``psutil.virtual_memory().available``; ComfyUI depends on psutil)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_run_fits(frames: int, padded_frames: int, width: int, height: int, pose_resized: bool = True,
                   available: int | None = None, where: str = "TemporalSample",
                   pose_streamed: bool = False) -> dict[str, int]:
    """Raise :class:`MagicAnimateError` with the figures and the fix when the run cannot fit in available RAM.

    Returns the estimate's parts when it fits.
    """
    parts = run_memory_parts(frames, padded_frames, width, height, pose_resized, pose_streamed=pose_streamed)
    need = sum(parts.values())
    avail = available_ram_bytes() if available is None else int(available)
    if need <= avail:
        return parts
    per_frame = max(1.0, need / max(1, frames))
    fit_frames = int(avail // per_frame)
    detail = ", ".join(f"{name} {format_bytes(b)}" for name, b in parts.items() if b)
    fewer = (f"fewer frames (at most about {fit_frames} at this size; split the pose video, e.g. with ImageFromBatch)"
             if fit_frames >= 1 else "fewer frames")
    raise MagicAnimateError(
        f"{where}: {frames} frames at {width}x{height} need about {format_bytes(need)} of RAM ({detail}), but only "
        f"{format_bytes(avail)} is available. Use {fewer} or a smaller width/height in MagicAnimate Appearance "
        "Encode.")
