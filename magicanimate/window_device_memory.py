"""Device memory one MagicAnimate window needs beyond the weights (what ComfyUI's ``memory_required`` should say).

ComfyUI sizes its decisions (how many weights to load, how many cond/uncond chunks to run in one UNet call) from the
model's activation estimate for a batch of ``chunks * f`` frame-instances of ``h x w`` latents. For the MagicAnimate
denoiser that batch is one window: windows run one after another, so one denoiser call sets the peak
(docs/ARCHITECTURE.md, "Work per step and peak memory"). Three things run in a window besides the SD1.5 UNet, each at
its own time:

- the UNet call itself (motion modules and reference attention inside it) while the window's ControlNet residuals and
  the step's reference keys/values are held;
- the ControlNet, once per frame, on the window's new frames, while the residuals of frames still needed are held;
- the appearance encoder, once per step, at batch K (reference images).

The estimate is the largest of the three. Weights are not in it: ComfyUI counts them separately (wherever the motion
modules live). Shapes, in ComfyUI's UNet for base width ``C0`` (320 in SD1.5) and ``T0 = h * w`` latent pixels:

- every UNet-like network here peaks in the feed-forward (GEGLU, inner width ``4 * C0``, projection ``8 * C0``) of
  the first full-resolution transformer on the decoder side, while the residual stream, the transformer's input, the
  level-0 skip connections and the temporal module's tensors of that level are alive. Measured with the fake-GPU dry
  run (``bench/fake_gpu_dry_run.py``, SDPA flash attention as on an NVIDIA card, linear in ``T0`` and in the batch):
  27.0 ``C0``-wide tensors per frame-instance for the temporal UNet, 12.0 for the ControlNet's encoder half per
  frame (plus its hint network at pixel resolution), 11.0 for the appearance encoder per image (it stops at the last
  decoder level's ``norm1``); see :data:`UNET_PEAK_WIDTHS` and the others below;
- the ControlNet residuals of one frame: 12 encoder levels plus the middle block, ``(C_l, h_l, w_l)`` each, in all
  ``5.125 * C0 * T0`` values (3 * C0 * T0 at full resolution, 1.25, 0.625 and 0.25 below);
- the reference tokens of one image in the 10 mid/up blocks (docs/ARCHITECTURE.md, "Reference attention: write and
  read"): ``5.3125 * C0 * T0`` values
  (3 blocks at ``(T0, C0)``, 3 at ``(T0/4, 2 C0)``, 3 at ``(T0/16, 4 C0)``, 1 at ``(T0/64, 4 C0)``), kept once in the
  encoder's dtype (the bank) and twice in the UNet's (its keys and values, projected once per step).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["UNET_PEAK_WIDTHS", "CONTROLNET_PEAK_WIDTHS", "HINT_PEAK_CHANNELS", "ENCODER_PEAK_WIDTHS",
           "RESIDUAL_WIDTHS", "REFERENCE_WIDTHS", "WindowMemory", "window_memory_parts", "window_memory_bytes"]

#: Live ``(batch, C0, h, w)``-sized tensors at the temporal UNet's peak, per frame-instance (dry-run measurement at
#: 128^2 and 256^2, the same figure to 0.2 %; the GEGLU alone is 16 of them).
UNET_PEAK_WIDTHS = 27.0
#: The same for the ControlNet's encoder half and middle block, per frame (calibrated like the UNet's).
CONTROLNET_PEAK_WIDTHS = 12.0
#: Live channels at pixel resolution in the ControlNet's hint network (16-channel convolutions at ``8h x 8w``), per
#: frame, at its peak.
HINT_PEAK_CHANNELS = 32
#: The same for the appearance encoder, per reference image.
ENCODER_PEAK_WIDTHS = 26.0
#: ControlNet residual values of one frame, in units of ``C0 * T0`` (12 levels plus the middle block).
RESIDUAL_WIDTHS = 3 * 1 + (1 + 2 * 2) / 4 + (2 + 2 * 4) / 16 + (3 * 4 + 4) / 64  # 5.125
#: Of those, the full-resolution decoder levels' residuals: still unconsumed at the UNet's peak.
RESIDUAL_WIDTHS_AT_PEAK = 3.0
#: Reference tokens of one image in the 10 mid/up blocks, in units of ``C0 * T0``.
REFERENCE_WIDTHS = 3 * 1 + 3 * 2 / 4 + 3 * 4 / 16 + 4 / 64  # 5.3125


@dataclass(frozen=True)
class WindowMemory:
    """What a window's memory depends on besides its batch.

    ``model_channels``: the UNet's base width C0; ``dtype_bytes``: the UNet's compute dtype size (residuals and
    reference keys/values are held in it); ``reference_images``: K (0 without an appearance input);
    ``encoder_dtype_bytes``: the appearance encoder's compute dtype size; ``control``: a pose ControlNet is applied;
    ``control_dtype_bytes``: its compute dtype size; ``held_frames``: residual frames kept beyond the window for a
    later one (the closed loop's first ``overlap`` frames).
    """

    model_channels: int = 320
    dtype_bytes: int = 2
    reference_images: int = 0
    encoder_dtype_bytes: int = 2
    control: bool = False
    control_dtype_bytes: int = 2
    held_frames: int = 0


def window_memory_parts(spec: WindowMemory, frames: int, chunks: int, height: int, width: int) -> dict[str, int]:
    """Bytes per part for one window of ``frames`` frames run as ``chunks`` cond/uncond chunks at once, on latents
    ``height x width`` (UNet input ``(chunks * frames, 4, height, width)``).

    Parts ending in ``_call`` are alive at the UNet call's peak; ``controlnet_run`` and ``appearance_encoder_run`` are
    the other two moments (each with what is held then). :func:`window_memory_bytes` takes the largest moment.
    """
    c0, s, t0 = spec.model_channels, spec.dtype_bytes, int(height) * int(width)
    batch, frames = int(chunks) * int(frames), int(frames)
    width0 = c0 * t0  # values in one full-resolution (C0, h, w) tensor of one frame
    residuals_frame = RESIDUAL_WIDTHS * width0 * s if spec.control else 0
    cached = (frames + spec.held_frames) * residuals_frame
    reference = spec.reference_images * REFERENCE_WIDTHS * width0 * (spec.encoder_dtype_bytes + 2 * s)
    parts = {
        "unet_call": int(UNET_PEAK_WIDTHS * batch * width0 * s),
        # The window's residuals concatenated for the call (a copy unless one frame in one chunk); the UNet pops them
        # level by level, so at its full-resolution peak only those levels are left.
        "control_residuals_call": int(RESIDUAL_WIDTHS_AT_PEAK / RESIDUAL_WIDTHS * batch * residuals_frame
                                      if batch > 1 else 0),
        "control_cache_call": int(cached),
        "reference_tokens_call": int(reference),
        "controlnet_run": 0,
        "appearance_encoder_run": 0,
    }
    if spec.control:
        cs = spec.control_dtype_bytes
        forward = frames * (CONTROLNET_PEAK_WIDTHS * width0 + HINT_PEAK_CHANNELS * 64 * t0) * cs
        parts["controlnet_run"] = int(forward + cached + reference)
    if spec.reference_images:
        encoder = spec.reference_images * ENCODER_PEAK_WIDTHS * width0 * spec.encoder_dtype_bytes
        parts["appearance_encoder_run"] = int(encoder + reference)
    return parts


def window_memory_bytes(spec: WindowMemory, frames: int, chunks: int, height: int, width: int) -> int:
    """Device bytes one window needs beyond the weights: the largest of the UNet call, the ControlNet run and the
    appearance encoder run (see :func:`window_memory_parts`)."""
    parts = window_memory_parts(spec, frames, chunks, height, width)
    call = sum(v for k, v in parts.items() if k.endswith("_call"))
    return max(call, parts["controlnet_run"], parts["appearance_encoder_run"])
