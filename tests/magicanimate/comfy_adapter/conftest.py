"""Tiny random-weight MagicAnimate files in the real layouts, loaded by the real loading code (session-scoped)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fixtures.model_files import TINY, write_appearance_encoder, write_controlnet, write_temporal_checkpoint


@dataclass
class TinyFiles:
    root: Path
    temporal: Path
    temporal_sd: dict
    appearance: Path
    controlnet: Path


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory) -> TinyFiles:
    root = tmp_path_factory.mktemp("magicanimate_models")
    temporal = root / "temporal_attention.ckpt"
    sd = write_temporal_checkpoint(temporal, TINY, seed=0)
    write_appearance_encoder(root / "appearance_encoder", TINY, seed=1)
    write_controlnet(root / "densepose_controlnet", TINY, seed=2)
    return TinyFiles(root, temporal, sd, root / "appearance_encoder", root / "densepose_controlnet")


@pytest.fixture(scope="session")
def tiny_models(tiny_files):
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
