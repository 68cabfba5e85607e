"""One full-size MagicAnimate denoising step: this pack (ComfyUI) vs the independent oracle (devtools/oracle).

Random full-size weights are written in the real file layouts (temporal_attention.ckpt, appearance_encoder/,
densepose_controlnet/), loaded by the pack's real loaders into ComfyUI, and one reference-DDIM step (t 961 -> 921,
CFG 7.5, 16 frames) is taken; then the oracle (devtools/oracle) loads the same files and takes the same step. Prints one
JSON line with the max abs difference. fp32 by default; runs on CUDA when available, else on the CPU.

    python -m bench.one_step_parity --frames 16 --latent 64          # the acceptance configuration
    python -m bench.one_step_parity --frames 16 --latent 32          # quicker on a CPU

Memory: the two sides run one after the other, so peak RAM stays around 12 GB at full size.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stage(msg: str) -> None:
    print(f"[one_step_parity] {msg}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--latent", type=int, default=64, help="latent height and width (pixels / 8)")
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--config", choices=["full", "tiny"], default="full")
    ap.add_argument("--workdir", default=None, help="where the random model files go (default: a temp dir)")
    args = ap.parse_args()

    import torch

    from devtools.comfy_env import bootstrap_inprocess, prepare_comfyui_copy

    scratch = Path(tempfile.mkdtemp(prefix="ma-bench-"))
    cpu = not torch.cuda.is_available()
    bootstrap_inprocess(prepare_comfyui_copy(scratch / "ComfyUI"), cpu=cpu)

    import comfy.model_management

    import devtools.oracle as ou
    from devtools.oracle import layers as oracle_layers
    from devtools.random_weights.model_files import (
        FULL,
        TINY,
        load_oracle_appearance_encoder,
        load_oracle_controlnet,
        load_oracle_unet,
        write_model_set,
    )
    from magicanimate.comfy_adapter.conditioning import apply_conditioning
    from magicanimate.comfy_adapter.loaders import (
        load_appearance_encoder,
        load_densepose_controlnet,
        load_temporal_model,
    )
    from magicanimate.comfy_adapter.payloads import Appearance, PoseCondition
    from magicanimate.comfy_adapter.sampling import sample_video
    from magicanimate.schedule import alphas_cumprod, ddim_sigmas

    cfg = FULL if args.config == "full" else TINY
    work = Path(args.workdir) if args.workdir else scratch / "models"
    work.mkdir(parents=True, exist_ok=True)
    stage(f"writing random {args.config} model files to {work}")
    t0 = time.time()
    write_model_set(work, cfg)
    gc.collect()
    t_write = time.time() - t0

    device = comfy.model_management.get_torch_device()
    f, h = args.frames, args.latent
    g = torch.Generator().manual_seed(5)
    z = torch.randn(1, 4, f, h, h, generator=g)
    ref = torch.randn(1, 4, h, h, generator=g)
    poses = torch.rand(f, 3, h * 8, h * 8, generator=g)
    ctx = cfg["cross_attention_dim"]
    text_c = torch.randn(1, 77, ctx, generator=g)
    text_u = torch.randn(1, 77, ctx, generator=g)
    scale = 0.18215

    # --- this pack, through ComfyUI
    stage("loading with the pack's loaders and sampling one step")
    t0 = time.time()
    temporal = load_temporal_model(str(work / "temporal_attention.ckpt"), torch.float32)
    encoder = load_appearance_encoder(str(work / "appearance_encoder"), torch.float32)
    control = load_densepose_controlnet(str(work / "densepose_controlnet"), torch.float32)
    t_load = time.time() - t0
    model, state = apply_conditioning(temporal.model, Appearance(encoder, ref / scale),
                                      PoseCondition(control, poses.permute(0, 2, 3, 1)))
    t0 = time.time()
    with torch.no_grad():
        out = sample_video(model, [[text_c, {}]], [[text_u, {}]], torch.zeros(f, 4, h, h), z[0].permute(1, 0, 2, 3),
                           seed=0, steps=25, cfg=args.cfg, sigmas=ddim_sigmas(25)[:2])
    t_ours = time.time() - t0
    ours = (out * scale * alphas_cumprod()[921].sqrt().item()).permute(1, 0, 2, 3).unsqueeze(0).float().cpu()
    stats = dict(state.stats)
    del model, temporal, encoder, control, state, out
    comfy.model_management.unload_all_models()
    comfy.model_management.soft_empty_cache()
    gc.collect()

    # --- the oracle, from the same files (attention chunked over the batch only to bound memory; same math)
    plain_attention = oracle_layers.softmax_attention  # the oracle's layers look it up in their own module

    def chunked(q, k, v, heads):
        return torch.cat([plain_attention(q[i:i + 1], k[i:i + 1], v[i:i + 1], heads) for i in range(q.shape[0])])

    oracle_layers.softmax_attention = chunked
    from safetensors.torch import load_file  # noqa: F401  (the fixtures read their own files)

    stage("oracle step")
    t0 = time.time()
    sd = torch.load(work / "temporal_attention.ckpt", map_location="cpu", weights_only=True)
    unet = load_oracle_unet(sd, cfg).to(device)
    del sd
    bank = {k: v.to(device) for k, v in
            load_oracle_appearance_encoder(work / "appearance_encoder")(ref, 961, text_c).items()}
    gc.collect()
    cn = load_oracle_controlnet(work / "densepose_controlnet").to(device)
    with torch.no_grad():
        expect = ou.oracle_step(unet, bank, cn, poses.to(device), z.to(device), 961,
                                ou.oracle_alphas_cumprod().to(device), text_c.to(device), text_u.to(device),
                                guidance_scale=args.cfg, windows=ou.oracle_windows(f, 16, 4)).float().cpu()
    t_oracle = time.time() - t0
    diff = (ours - expect).abs()
    print(json.dumps({
        "bench": "one_step_parity", "config": args.config, "frames": f, "latent": [h, h], "dtype": "fp32",
        "device": str(device), "cfg": args.cfg, "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
        "max_abs_value": float(expect.abs().max()), "encoder_runs": stats["encoder_runs"],
        "control_frames": stats["control_frames"], "seconds_write": round(t_write, 1), "seconds_load": round(t_load, 1),
        "seconds_ours": round(t_ours, 1), "seconds_oracle": round(t_oracle, 1)}))


if __name__ == "__main__":
    main()
