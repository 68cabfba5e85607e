"""What the Appearance Encode and Pose Control nodes hand to Temporal Sample (plain data, no behaviour)."""

from __future__ import annotations

from dataclasses import dataclass

import comfy.controlnet
import torch

from ..pose_frames import FrameSource
from .loaders import AppearanceEncoderModel

__all__ = ["Appearance", "PoseCondition"]


@dataclass
class Appearance:
    """The AppearanceEncode node's output: encoder + reference latents ``(K, 4, h, w)``, K = 1..4 reference images
    of the same person (unscaled VAE space)."""

    encoder: AppearanceEncoderModel
    latent: torch.Tensor


@dataclass
class PoseCondition:
    """The PoseControl node's output: a ControlNet and its pose frames in [0, 1]: an IMAGE batch ``(T, H, W, 3)``,
    or a :class:`~magicanimate.pose_frames.FrameSource` of T frames read a chunk at a time (a VIDEO input)."""

    control_net: comfy.controlnet.ControlNet
    frames: torch.Tensor | FrameSource
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    fit: str = "stretch"
