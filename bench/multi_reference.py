"""Time and memory cost of each extra reference image (Appearance Encode with 1 to 4 photos), in-process through
ComfyUI, on random weights.

Prints one JSON line per image count: median seconds of --repeats Temporal Sample runs after one warm-up, the bank's
size (the appearance encoder's tokens of the 10 reference blocks plus their projected keys/values, in MiB), the peak
memory the run added (GPU: torch.cuda.max_memory_allocated; CPU: glibc's heap in use sampled every 1 ms, minus
its value before the run), and the extra seconds and MiB relative to one image.

    python -m bench.multi_reference --size 64 --frames 16 --steps 1 --repeats 3          # CPU, small size
    python -m bench.multi_reference --size 512 --frames 16 --steps 5 --dtype fp16        # on the GPU machine
    python -m bench.multi_reference --config tiny --repeats 2                            # quick check on a CPU

The full-size models in fp32 take about 10 GB of RAM and minutes per run on a small shared CPU.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import statistics
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


class HeapPeak:
    """Peak heap bytes in use (glibc ``mallinfo2``: allocated arena + mmapped blocks) above the value at start,
    sampled by a thread every 1 ms while the block runs. Unlike the resident size, memory that the allocator keeps
    after a free does not count, so consecutive runs are comparable."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        self._mallinfo2 = libc.mallinfo2

    def in_use(self) -> int:
        info = self._mallinfo2()
        return int(info.uordblks + info.hblkhd)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.in_use() - self.base)
            time.sleep(self.interval)

    def __enter__(self) -> HeapPeak:
        self.base = self.in_use()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.in_use() - self.base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", choices=["full", "tiny"], default="full")
    ap.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp32")
    ap.add_argument("--workdir", default=None, help="keep the random model files here between runs")
    args = ap.parse_args()

    import torch

    from devtools.random_weights.networks import bootstrap, load_networks

    scratch = bootstrap()

    import comfy.model_management

    from magicanimate.comfy_adapter.conditioning import apply_conditioning
    from magicanimate.comfy_adapter.payloads import Appearance, PoseCondition
    from magicanimate.comfy_adapter.sampling import initial_noise, sample_video
    from magicanimate.windows import padded_length

    nets = load_networks(args.config, args.dtype, args.workdir, scratch)
    cfg, temporal, encoder, control = nets.config, nets.temporal, nets.encoder, nets.control
    device = comfy.model_management.get_torch_device()
    cuda = torch.cuda.is_available()
    h = args.size // 8
    ctx = [[torch.zeros(1, 77, cfg["cross_attention_dim"]), {}]]
    total = padded_length(args.frames)
    poses = torch.rand(args.frames, args.size, args.size, 3)
    latent = torch.zeros(total, 4, h, h)
    noise = initial_noise(1, latent, "tiled")
    references = torch.randn(max(args.images), 4, h, h, generator=torch.Generator().manual_seed(0))
    results = {k: {"times": [], "peaks": [], "bank": {}} for k in args.images}
    # Round-robin over the image counts, so that a change in machine load (shared CPUs) hits every count alike.
    for run in range(args.repeats + 1):
        for k in args.images:
            res = results[k]
            state_box = {}

            def on_window(box=state_box, bank=res["bank"]):
                st = box["state"]
                nbytes = sum(t.numel() * t.element_size() for t in st.bank.values())
                nbytes += sum(t.numel() * t.element_size() for kv in st.kv.values() for t in kv)
                bank["bytes"] = max(bank.get("bytes", 0), nbytes)

            model, state = apply_conditioning(temporal.model, Appearance(encoder, references[:k]),
                                              PoseCondition(control, poses), on_window=on_window)
            state_box["state"] = state
            gc.collect()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                start_alloc = torch.cuda.memory_allocated()
            with HeapPeak() as heap, torch.no_grad():
                t0 = time.perf_counter()
                sample_video(model, ctx, ctx, latent, noise, 1, args.steps, args.cfg)
                if cuda:
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - t0
            if run:  # the first round is the warm-up
                res["times"].append(seconds)
                res["peaks"].append((torch.cuda.max_memory_allocated() - start_alloc) if cuda else heap.peak)
    base = None
    for k in args.images:
        res = results[k]
        row = {"bench": "multi_reference", "config": args.config, "dtype": args.dtype, "device": str(device),
               "images": k, "frames": args.frames, "size": [args.size, args.size], "steps": args.steps,
               "cfg": args.cfg, "repeats": len(res["times"]), "seconds": round(statistics.median(res["times"]), 3),
               "bank_mib": round(res["bank"].get("bytes", 0) / 2**20, 3),
               "peak_added_mib": round(statistics.median(res["peaks"]) / 2**20, 1),
               "peak_kind": "cuda_max_allocated" if cuda else "cpu_heap_sampled"}
        if base is None:
            base = row
        extra = k - base["images"]
        if extra:
            row["seconds_per_extra_image"] = round((row["seconds"] - base["seconds"]) / extra, 3)
            row["bank_mib_per_extra_image"] = round((row["bank_mib"] - base["bank_mib"]) / extra, 3)
            row["peak_mib_per_extra_image"] = round((row["peak_added_mib"] - base["peak_added_mib"]) / extra, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
