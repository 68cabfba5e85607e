"""The fake-GPU dry run (bench/fake_gpu_dry_run.py) at tiny size: the whole sampling on a fake CUDA device in fp16,
with the text context on the CPU as ComfyUI keeps it; a tensor on the wrong device or dtype would raise here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fake_gpu_dry_run_tiny_fp16_completes_on_the_fake_cuda_device():
    spec = importlib.util.spec_from_file_location("fake_gpu_dry_run", REPO / "bench/fake_gpu_dry_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (result,) = module.main(["--config", "tiny", "--frames", "20", "--size", "64", "--steps", "1", "--dtypes", "fp16",
                             "--budgets-gb", "8"])
    assert result["device"] == "fake cuda:0" and result["dtype"] == "float16"
    assert result["windows_run"] == result["windows"] == 3
    assert result["controlnet_frames"] == result["padded_frames"] and result["encoder_runs"] == 1
    assert all(v > 0 for k, v in result["tflop_per_frame"].items() if k != "appearance_encoder")
    assert result["peak_gib"]["total"] > result["peak_gib"]["weights"] > 0
