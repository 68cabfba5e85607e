"""Random-weight MagicAnimate networks in the real file layouts, loaded in-process through ComfyUI (for benches).

Shared by ``bench/temporal_sample.py`` and ``bench/multi_reference.py``: a scratch ComfyUI copy is bootstrapped (CPU
unless CUDA is present), the three MagicAnimate files are written once (``--workdir`` keeps them between runs) and
loaded by the pack's own loaders, so a bench measures what a user's files cost.
"""

from __future__ import annotations

import gc
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DTYPES = ("fp16", "bf16", "fp32")


@dataclass
class Networks:
    """The loaded networks, the random-model config (``FULL`` or ``TINY``) and the weight dtype."""

    config: dict
    dtype: Any
    temporal: Any
    encoder: Any
    control: Any


def bootstrap() -> Path:
    """Bootstrap a scratch ComfyUI copy in-process (the repository stays importable); returns the scratch dir."""
    import torch

    from devtools.comfy_env import bootstrap_inprocess, prepare_comfyui_copy

    scratch = Path(tempfile.mkdtemp(prefix="ma-bench-"))
    bootstrap_inprocess(prepare_comfyui_copy(scratch / "ComfyUI"), cpu=not torch.cuda.is_available())
    return scratch


def load_networks(config: str, dtype: str, workdir: str | None, scratch: Path,
                  shapes: dict | None = None) -> Networks:
    """Write (unless already in ``workdir``) and load the temporal MODEL, appearance encoder and ControlNet.

    ``config``: "full" (the real shapes) or "tiny"; ``dtype``: one of :data:`DTYPES`; ``shapes``: the diffusers
    folders' key shapes (``diffusers_shapes``) where diffusers is not installed. Call after :func:`bootstrap`.
    """
    import torch

    from devtools.random_weights.model_files import (
        FULL,
        TINY,
        write_model_set,
    )
    from magicanimate.comfy_adapter.loaders import (
        load_appearance_encoder,
        load_densepose_controlnet,
        load_temporal_model,
    )

    cfg = FULL if config == "full" else TINY
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    work = Path(workdir) if workdir else scratch / "models"
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "temporal_attention.ckpt").exists():
        write_model_set(work, cfg, temporal_dtype=torch.float16, shapes=shapes)
    gc.collect()
    return Networks(config=cfg, dtype=weight_dtype,
                    temporal=load_temporal_model(str(work / "temporal_attention.ckpt"), weight_dtype),
                    encoder=load_appearance_encoder(str(work / "appearance_encoder"), weight_dtype),
                    control=load_densepose_controlnet(str(work / "densepose_controlnet"), weight_dtype))
