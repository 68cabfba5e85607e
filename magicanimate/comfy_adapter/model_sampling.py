"""The reference's noise schedule as a ComfyUI ``model_sampling`` object (docs/ARCHITECTURE.md, "The model",
"Schedule, timesteps and noise scaling")."""

from __future__ import annotations

import comfy.model_sampling

from ..schedule import BETA_END, BETA_START, COMFY_BETA_SCHEDULE

__all__ = ["make_model_sampling"]


class _ModelSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
    pass


class _SamplingConfig:
    sampling_settings = {"beta_schedule": COMFY_BETA_SCHEDULE, "linear_start": BETA_START, "linear_end": BETA_END}


def make_model_sampling() -> comfy.model_sampling.ModelSamplingDiscrete:
    """EPS model sampling on the reference's linear-beta table (ComfyUI's ``sqrt_linear``), sigmas ``(1000,)``."""
    return _ModelSampling(_SamplingConfig())
