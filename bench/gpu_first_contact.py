"""First contact with a GPU: every headline figure from one command of at most 8 minutes, as JSON lines.

    bash bench/gpu_first_contact.sh --prepare   # here, once, with network: what a bare GPU machine lacks, into .gpu/
    bash bench/gpu_first_contact.sh             # on the GPU machine (device tool: carry [".gpu"])
    python -m bench.gpu_first_contact --dry     # the plan: each part, its time limit and estimated seconds
    python -m bench.gpu_first_contact --smoke   # the same orchestration on a CPU with the tiny networks (tests)

One set of random full-size weights is written once (fp16 temporal checkpoint, fp32 diffusers folders, as the real
files are) and loaded once by the pack's own loaders; every part reuses it (part e loads the same files in fp32).
Parts, most important first, each interrupted at its own time limit (between windows, through ComfyUI's own
interruption) and the whole command under a global 8-minute deadline; each part's JSON line is written (to stdout
and, when ``$OUT`` is set, appended to ``$OUT/gpu_first_contact.jsonl``) as soon as it finishes:

a. Temporal Sample, 512x512, 25 steps, fp16, 48 and 96 frames, eager: median of 3 runs after a short warm-up
   (s/frame, peak GiB, achieved TFLOP/s from the analytic FLOP counts of ``bench.temporal_sample.flops``);
b. the same through core's ``TorchCompileModel`` wrapper (inductor) at 96 frames;
c. an 8 GiB card as ComfyUI would see one: its free- and total-memory figures capped (so its loading and
   CFG-batching decisions are an 8 GiB card's) and the allocator capped too (so going over raises), 96 frames;
d. 960 frames, 2 steps: peak only (goal: within 0.5 GiB of the 96-frame peak of part a);
e. fp16 against fp32, one denoising step, 16 frames at 512x512: max and mean relative difference.

Estimates assume :data:`ASSUMED_TFLOPS` achieved in fp16 (the goal of 0.18 s/frame needs about 470).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from bench.temporal_sample import flops

DEADLINE_S = 480.0
SETUP_S = 45.0  # wheels unpacked, ComfyUI imported, one weight set written and loaded (16 cores, NVMe)
COMPILE_S = 90.0  # inductor compiling the SD1.5 UNet with its motion modules, once
ASSUMED_TFLOPS = 250.0
FP32_SLOWDOWN = 8.0
LOWVRAM_SLOWDOWN = 1.3


@dataclass(frozen=True)
class Part:
    """One part of the plan: ``frames`` lists the videos timed, each ``runs`` times after ``warmup`` steps."""

    name: str
    what: str
    frames: tuple[int, ...]
    steps: int
    runs: int
    warmup_steps: int = 0
    fixed_s: float = 0.0
    slowdown: float = 1.0
    options: dict = field(default_factory=dict)
    min_limit_s: float = 0.0

    def estimate_s(self, size: int) -> float:
        from magicanimate.windows import padded_length, segment_windows

        seconds = self.fixed_s
        for i, frames in enumerate(self.frames):
            total = padded_length(frames)
            windows = len(segment_windows(total))
            run = flops(total, size, self.steps, windows, 7.5) / (ASSUMED_TFLOPS * 1e12) * self.slowdown
            seconds += run * self.runs + (run * self.warmup_steps / self.steps if i == 0 else 0.0)
        return seconds

    def limit_s(self, size: int) -> float:
        return max(self.min_limit_s, round(self.estimate_s(size) * 1.1 + 5.0))


def plan(smoke: bool = False) -> list[Part]:
    """The parts a..e at full size, or scaled down for ``--smoke`` (tiny networks on a CPU)."""
    if smoke:
        return [Part("a_eager", "eager fp16", (16, 32), 2, 1, warmup_steps=1, min_limit_s=300),
                Part("b_compile", "core TorchCompileModel", (16,), 1, 1, options={"compile": "eager"},
                     min_limit_s=300),
                Part("c_8gib_card", "8 GiB card as ComfyUI sees it", (32,), 2, 1, options={"cap_gib": 8.0},
                     min_limit_s=300),
                Part("d_960_frames", "long video peak", (64,), 1, 1, min_limit_s=300),
                Part("e_fp16_vs_fp32", "one step, fp16 against fp32", (16,), 1, 1, options={"compare": True},
                     min_limit_s=300)]
    return [Part("a_eager", "eager fp16", (48, 96), 25, 3, warmup_steps=2),
            Part("b_compile", "core TorchCompileModel (inductor)", (96,), 25, 1, warmup_steps=2, fixed_s=COMPILE_S,
                 options={"compile": "inductor"}),
            Part("c_8gib_card", "8 GiB card as ComfyUI sees it", (96,), 25, 1, slowdown=LOWVRAM_SLOWDOWN,
                 options={"cap_gib": 8.0}),
            Part("d_960_frames", "long video peak", (960,), 2, 1),
            Part("e_fp16_vs_fp32", "one step, fp16 against fp32", (16,), 1, 1, fixed_s=10.0,
                 slowdown=1 + FP32_SLOWDOWN, options={"compare": True})]


class Report:
    """JSON lines to stdout and, when ``$OUT`` is set, appended (and flushed to disk) to ``$OUT/<name>.jsonl``."""

    def __init__(self, name: str = "gpu_first_contact") -> None:
        out = os.environ.get("OUT")
        self.path = Path(out) / f"{name}.jsonl" if out else None

    def __call__(self, record: dict) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())


class PartTimer:
    """Interrupts the sampling (ComfyUI's own interruption, honoured between windows) once ``seconds`` have passed."""

    def __init__(self, seconds: float) -> None:
        import comfy.model_management as mm

        self.mm, self.fired = mm, False
        self.timer = threading.Timer(max(seconds, 0.0), self._fire)

    def _fire(self) -> None:
        self.fired = True
        self.mm.interrupt_current_processing(True)

    def __enter__(self) -> PartTimer:
        self.timer.start()
        return self

    def __exit__(self, *exc) -> bool:
        self.timer.cancel()
        self.mm.interrupt_current_processing(False)
        return exc[0] is not None and issubclass(exc[0], self.mm.InterruptProcessingException)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="print the plan (limits, estimates) and run nothing")
    ap.add_argument("--smoke", action="store_true", help="tiny networks, 64x64, few frames (runs on a CPU)")
    ap.add_argument("--workdir", default=None, help="where the one weight set is written (default: a temp folder)")
    ap.add_argument("--shapes", default=None, help="diffusers key shapes (JSON, from --prepare) instead of diffusers")
    ap.add_argument("--write-shapes", default=None, help="write the full-size diffusers key shapes here and exit")
    args = ap.parse_args(argv)
    parts, size = plan(args.smoke), 64 if args.smoke else 512
    if args.write_shapes:
        from devtools.random_weights.model_files import FULL, diffusers_shapes

        Path(args.write_shapes).write_text(json.dumps(diffusers_shapes(FULL)))
        return 0
    if args.dry:
        for p in parts:
            print(json.dumps({"part": p.name, "what": p.what, "frames": list(p.frames), "steps": p.steps,
                              "runs": p.runs, "limit_s": p.limit_s(size),
                              "estimate_s": round(p.estimate_s(size), 1), "weights": "shared"}))
        total = SETUP_S + sum(p.limit_s(size) for p in parts)
        print(json.dumps({"part": "total", "setup_s": SETUP_S, "limits_s": total, "deadline_s": DEADLINE_S,
                          "assumed_tflops": ASSUMED_TFLOPS}))
        return 0
    from bench.gpu_parts import run_plan

    return run_plan(parts, size, args, Report(), float("inf") if args.smoke else DEADLINE_S, PartTimer)


if __name__ == "__main__":
    sys.exit(main())
