"""The suite's one set of tiny MagicAnimate networks, and the inputs the tests feed them.

Tiny random-weight files in the real layouts (SD1.5's block structure at widths 32-128 with 32-wide text
conditioning, fast on a CPU), written once per session and loaded by the pack's real loading code. Registered as a
pytest plugin by ``tests/conftest.py``, so every test can ask for ``tiny_files`` or ``tiny_models``; the helpers are
importable as ``tiny_models.<name>`` (``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from devtools.random_weights.model_files import (
    TINY,
    write_model_set,
    write_temporal_checkpoint,
)

#: The tiny networks' configuration (the same as ``devtools.random_weights.model_files.TINY``).
TINY32 = TINY


@dataclass
class TinyFiles:
    """The session's tiny model files: ``root`` is a ``models/magicanimate``-style folder holding them all."""

    root: Path
    temporal: Path  # full temporal checkpoint (SD1.5 UNet + motion modules)
    temporal_sd: dict  # its state dict
    motion_only: Path  # the motion modules alone (needs a MODEL input)
    appearance: Path  # appearance-encoder folder (config.json + weights)
    controlnet: Path  # DensePose ControlNet folder


def write_tiny_files(root: Path) -> TinyFiles:
    """Write the tiny files under ``root`` (seeds 0, 1, 2 for the denoiser, encoder and ControlNet)."""
    temporal = root / "temporal_attention.ckpt"
    sd = write_model_set(root, TINY)
    write_temporal_checkpoint(root / "motion_only.ckpt", TINY, seed=0, kind="motion_only")
    return TinyFiles(root, temporal, sd, root / "motion_only.ckpt", root / "appearance_encoder",
                     root / "densepose_controlnet")


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory) -> TinyFiles:
    return write_tiny_files(tmp_path_factory.mktemp("magicanimate_models"))


@pytest.fixture(scope="session")
def tiny_models(tiny_files):
    """(temporal model, appearance encoder, DensePose ControlNet) loaded in float32 by the pack's loaders."""
    from magicanimate.comfy_adapter.loaders import (
        load_appearance_encoder,
        load_densepose_controlnet,
        load_temporal_model,
    )

    torch.manual_seed(0)
    temporal = load_temporal_model(str(tiny_files.temporal), torch.float32)
    encoder = load_appearance_encoder(str(tiny_files.appearance), torch.float32)
    control = load_densepose_controlnet(str(tiny_files.controlnet), torch.float32)
    return temporal, encoder, control


def viridis_frames(n: int, height: int = 64, width: int = 64, expand: bool = False) -> torch.Tensor:
    """``n`` DensePose-looking IMAGE frames ``(n, height, width, 3)``: viridis background, a moving viridis "body"
    whose colour steps with the frame index; ``expand``: one frame repeated as a view (no memory for long videos)."""
    from magicanimate.densepose import viridis_curve

    curve = viridis_curve()
    count = 1 if expand else n
    idx = torch.zeros(count, height, width, dtype=torch.long)
    top, left = height // 4, width * 3 // 8
    idx[:, top:height - top, left:width - left] = torch.arange(count).view(count, 1, 1) * 3 % 200 + 40
    frames = curve[idx]
    return frames.expand(n, -1, -1, -1) if expand else frames


def text_cond(width: int = 32, value: float = 0.0) -> list:
    """A CONDITIONING of one all-``value`` text embedding ``(1, 77, width)``."""
    return [[torch.full((1, 77, width), value), {}]]


# Running Temporal Sample on the tiny networks --------------------------------------------------------------------

SIZE = 32  # pixels; latent 4x4


def text(value: float = 0.0) -> list:
    """A 32-wide CONDITIONING of value ``value``, the tiny networks' text width."""
    return text_cond(32, value)


def hint_frames(n: int) -> torch.Tensor:
    """IMAGE batch ``(n, SIZE, SIZE, 3)`` whose frame i is the constant (i + 1) / 64: frame ids survive resizing."""
    return (torch.arange(n, dtype=torch.float32) + 1).div(64).view(n, 1, 1, 1).expand(n, SIZE, SIZE, 3).contiguous()


def temporal_sample(tiny_models, frames: int, positive=None, negative=None, appearance=True, pose=True, model=None,
                    steps: int = 1, cfg: float = 7.5, **kw) -> torch.Tensor:
    """Pose Control on ``hint_frames(frames)`` then Temporal Sample (the pack's nodes) at ``SIZE`` pixels; the
    latents ``(frames, 4, SIZE / 8, SIZE / 8)``. ``pose=False``: pose strength 0; ``appearance=False``: none."""
    from devtools.pack import pack_nodes
    from magicanimate.comfy_adapter.payloads import Appearance

    by_id = pack_nodes()
    temporal, encoder, control = tiny_models
    model = model if model is not None else temporal.model
    pose_cond = by_id["MagicAnimatePoseControl"].execute(control, hint_frames(frames)).result[0]
    if not pose:
        pose_cond.strength = 0.0
    latent = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(0))
    app = Appearance(encoder, latent) if appearance else None
    out = by_id["MagicAnimateTemporalSample"].execute(model, app, pose_cond, positive or text(0.5), negative or text(),
                                                      seed=1, steps=steps, cfg=cfg, **kw)
    return out.result[0]["samples"]


def sample_without_node(tiny_models, frames: int, model, appearance: bool, size: int = 128) -> torch.Tensor:
    """One reference-DDIM step through apply_conditioning + sample_video (the node requires an appearance).

    128 pixels: the tiny UNet's middle block then has 2x2 tokens (with one token, self-attention is the identity).
    """
    from magicanimate.comfy_adapter.conditioning import apply_conditioning
    from magicanimate.comfy_adapter.payloads import Appearance, PoseCondition
    from magicanimate.comfy_adapter.sampling import initial_noise, sample_video

    _, encoder, control = tiny_models
    latent = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    app = Appearance(encoder, latent) if appearance else None
    patched, _ = apply_conditioning(model, app, PoseCondition(control, hint_frames(frames)))
    start = torch.zeros(frames, 4, size // 8, size // 8)
    return sample_video(patched, text(0.5), text(), start, initial_noise(1, start, "tiled"), 1, 1, 7.5)
