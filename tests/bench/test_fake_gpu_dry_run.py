"""The fake-GPU dry run (bench/fake_gpu_dry_run.py) at small sizes: the whole sampling on a fake CUDA device in fp16,
with the text context on the CPU as ComfyUI keeps it (a tensor on the wrong device or dtype would raise here), and
the MagicAnimate MODEL's memory estimate against the measured peak."""

from __future__ import annotations

import pytest

from bench import fake_gpu_dry_run


def dry_run(*argv: str) -> list[dict]:
    return fake_gpu_dry_run.main(["--steps", "1", "--dtypes", "fp16", *argv])


@pytest.mark.slow
def test_fake_gpu_dry_run_tiny_fp16_completes_on_the_fake_cuda_device():
    (result,) = dry_run("--config", "tiny", "--frames", "20", "--size", "64", "--budgets-gb", "8")
    assert result["device"] == "fake cuda:0" and result["dtype"] == "float16"
    assert result["windows_run"] == result["windows"] == 3
    assert result["controlnet_frames"] == result["padded_frames"] and result["encoder_runs"] == 1
    assert all(v > 0 for k, v in result["tflop_per_frame"].items() if k != "appearance_encoder")
    assert result["peak_gib"]["total"] > result["peak_gib"]["weights"] > 0
    # ComfyUI's estimate for the window batch it ran (both CFG halves: 2 x 16) is within 20 % of the measured peak
    # of activations and caches.
    assert result["unet_batch"] == 32
    assert 0.8 <= result["estimate_over_measured"] <= 1.2


@pytest.mark.slow
def test_fake_gpu_dry_run_small_budget_splits_cfg_and_stays_under_it():
    # Full-width networks (4.652 GiB of fp16 weights) on 64x64 pixels, a card 35 MB larger than the weights: both CFG
    # halves at once would peak at 5.044 GB; ComfyUI, told the right estimate, runs them one at a time.
    (result,) = dry_run("--frames", "16", "--size", "64", "--budgets-gb", "5.035")
    assert result["unet_batch"] == 16 and result["cond_chunks_per_call"] == 1
    assert result["peak_gib"]["total_gb"] <= 5.035
    assert 0.8 <= result["estimate_over_measured"] <= 1.2
