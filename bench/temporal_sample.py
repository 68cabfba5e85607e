"""Speed and memory of MagicAnimate Temporal Sample, in-process through ComfyUI, on random full-size weights.

Prints one JSON line per configuration: frames, size, steps, median seconds of --repeats runs after one warm-up,
s/frame, peak GPU memory (GiB, torch.cuda.max_memory_allocated) and achieved TFLOP/s from the analytic FLOP count of
docs/ARCHITECTURE.md, "Networks" (denoiser 0.55 TMAC per frame-instance + 0.045 for reference attention on cond rows,
ControlNet 0.14 TMAC per frame, appearance encoder 0.40 TMAC per step, all at 512x512 and scaled by pixel count).

    python -m bench.temporal_sample --frames 16 32 48 96 --size 512 --steps 25 --repeats 3      # on the GPU machine
    python -m bench.temporal_sample --config tiny --frames 16 48 --size 64 --steps 2 --repeats 1 # smoke test on a CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TMAC_DENOISER, TMAC_REFERENCE, TMAC_CONTROLNET, TMAC_ENCODER = 0.55, 0.045, 0.14, 0.40


def flops(frames: int, size: int, steps: int, windows: int, cfg: float) -> float:
    """Analytic FLOPs (2 x MAC) of one run: the "Networks" figures of docs/ARCHITECTURE.md scaled by (size / 512)^2."""
    scale = (size / 512) ** 2
    halves = 1 if cfg == 1.0 else 2
    denoise = windows * 16 * (halves * TMAC_DENOISER + TMAC_REFERENCE)
    per_step = denoise + frames * TMAC_CONTROLNET + TMAC_ENCODER
    return 2e12 * per_step * steps * scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 32, 48, 96])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", choices=["full", "tiny"], default="full")
    ap.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--compile", default="none", help="torch.compile backend through core's TorchCompileModel wrapper")
    ap.add_argument("--memory-cap-gib", type=float, default=None,
                    help="ComfyUI sees a card of this size (its free/total memory capped, as bench.gpu_parts does)")
    args = ap.parse_args()

    import contextlib

    import torch

    from devtools.random_weights.networks import bootstrap, load_networks

    scratch = bootstrap()

    import comfy.model_management

    from bench.gpu_parts import Video, card_seen_as

    nets = load_networks(args.config, args.dtype, args.workdir, scratch)
    device = comfy.model_management.get_torch_device()
    cuda = torch.cuda.is_available()
    card = card_seen_as(args.memory_cap_gib) if args.memory_cap_gib else contextlib.nullcontext()
    with card:
        for frames in args.frames:
            video = Video(nets, frames, args.size, None if args.compile == "none" else args.compile)
            times = []
            for run in range(args.repeats + 1):
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                video.sample(args.steps, args.cfg)
                if cuda:
                    torch.cuda.synchronize()
                if run or args.repeats == 0:  # the first run is the warm-up (timed only when it is the only run)
                    times.append(time.perf_counter() - t0)
            seconds = statistics.median(times)
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
            print(json.dumps({
                "bench": "temporal_sample", "config": args.config, "dtype": args.dtype, "device": str(device),
                "frames": frames, "padded_frames": video.total, "windows": video.windows,
                "size": [args.size, args.size], "steps": args.steps, "cfg": args.cfg, "compile": args.compile,
                "memory_cap_gib": args.memory_cap_gib, "repeats": len(times), "seconds": round(seconds, 3),
                "s_per_frame": round(seconds / frames, 4), "peak_gib": None if peak is None else round(peak, 2),
                "tflops": (round(flops(video.total, args.size, args.steps, video.windows, args.cfg) / seconds / 1e12,
                                 2) if args.config == "full" else None)}),
                flush=True)


if __name__ == "__main__":
    main()
