"""Independent reference ("oracle") implementation of MagicAnimate inference, for tests only.

Everything here is written directly from the description of the model (docs/ARCHITECTURE.md, "The model"), in plain
torch, without importing the project's ``magicanimate`` package or ComfyUI. diffusers is used only where the
reference *is* diffusers (the 2D appearance encoder, the ControlNet); the 3D denoiser is written out by hand.

The code favours readability over speed: every attention is an explicit ``softmax(Q K^T / sqrt(d)) V``, reference
attention computes both the plain and the reference result for every row and then selects, and so on. It is meant to be
run on tiny random-weight models on CPU, in fp32.

Shape conventions: ``b`` batch (CFG halves), ``f`` frames, ``C`` channels, ``h, w`` latent size, ``N = h*w`` tokens.
Video tensors are ``(b, C, f, h, w)``; "per frame" operations fold them batch-major to ``(b*f, C, h, w)``
(row = batch_index * f + frame).
"""


from .appearance import OracleAppearanceEncoder
from .layers import (
    BANK_BLOCK_NAMES,
    MOTION_MODULE_KEY_SUFFIXES,
    motion_module_prefixes,
    sinusoidal_position_table,
    timestep_embedding,
)
from .sampling import (
    oracle_alphas_cumprod,
    oracle_controlnet_residuals,
    oracle_ddim_update,
    oracle_guided_eps,
    oracle_step,
    oracle_timesteps,
    oracle_windows,
)
from .unet import OracleUNet3D

__all__ = [
    "BANK_BLOCK_NAMES",
    "MOTION_MODULE_KEY_SUFFIXES",
    "OracleAppearanceEncoder",
    "OracleUNet3D",
    "motion_module_prefixes",
    "oracle_alphas_cumprod",
    "oracle_controlnet_residuals",
    "oracle_ddim_update",
    "oracle_guided_eps",
    "oracle_step",
    "oracle_timesteps",
    "oracle_windows",
    "sinusoidal_position_table",
    "timestep_embedding",
]
