"""The parts of ``bench.gpu_first_contact`` run in one process on one weight set (see that module for the plan)."""

from __future__ import annotations

import contextlib
import gc
import json
import statistics
import time
from pathlib import Path

from bench.temporal_sample import flops


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else None


@contextlib.contextmanager
def card_seen_as(gib: float):
    """ComfyUI sees a card of ``gib`` GiB: its total- and free-memory figures are capped (the free memory is what a
    card of that size would have left with this process's allocations), and so is torch's allocator on CUDA, so that
    going over raises instead of borrowing the real card's memory. Models are unloaded first so they load again under
    the cap, with the decisions (weights left off the card, CFG halves split) an 8 GiB card gets."""
    import comfy.model_management as mm
    import torch

    cap = int(gib * 2**30)
    dev = mm.get_torch_device()
    real_total = mm.get_total_memory(dev)
    hidden = max(real_total - cap, 0)
    saved = (mm.get_total_memory, mm.get_free_memory, mm.total_vram)

    def total(d=None, torch_total_too=False):
        t = saved[0](d, torch_total_too)
        return (min(t[0], cap), min(t[1], cap)) if torch_total_too else min(t, cap)

    def free(d=None, torch_free_too=False):
        f = saved[1](d, torch_free_too)
        return (max(f[0] - hidden, 0), f[1]) if torch_free_too else max(f - hidden, 0)

    mm.unload_all_models()
    mm.soft_empty_cache(True)
    mm.get_total_memory, mm.get_free_memory, mm.total_vram = total, free, cap / 2**20
    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap / real_total))
    try:
        yield
    finally:
        mm.get_total_memory, mm.get_free_memory, mm.total_vram = saved
        if torch.cuda.is_available():
            torch.cuda.set_per_process_memory_fraction(1.0)
        mm.unload_all_models()
        mm.soft_empty_cache(True)


class Video:
    """Inputs for one video (random poses and reference latent) and the MagicAnimate MODEL patched for it."""

    def __init__(self, nets, frames: int, size: int, compile_backend: str | None = None) -> None:
        import torch

        from magicanimate.comfy_adapter.conditioning import apply_conditioning
        from magicanimate.comfy_adapter.context import SegmentOptions
        from magicanimate.comfy_adapter.payloads import Appearance, PoseCondition
        from magicanimate.comfy_adapter.sampling import initial_noise
        from magicanimate.windows import padded_length

        gen = torch.Generator().manual_seed(frames)
        h, self.frames, self.total = size // 8, frames, padded_length(frames)
        self.segments = SegmentOptions()
        self.windows = len(self.segments.windows(self.total))
        poses = torch.rand(frames, size, size, 3, generator=gen)
        appearance = Appearance(nets.encoder, torch.randn(1, 4, h, h, generator=gen))
        self.latent = torch.zeros(self.total, 4, h, h)
        self.noise = initial_noise(1, self.latent, "tiled")
        self.context = [[torch.zeros(1, 77, nets.config["cross_attention_dim"]), {}]]
        self.model, _ = apply_conditioning(nets.temporal.model, appearance, PoseCondition(nets.control, poses),
                                           self.segments)
        if compile_backend:
            from comfy_api.torch_helpers.torch_compile import set_torch_compile_wrapper

            set_torch_compile_wrapper(self.model, backend=compile_backend)

    def sample(self, steps: int, cfg: float = 7.5):
        import torch

        from magicanimate.comfy_adapter.sampling import sample_video

        with torch.no_grad():
            return sample_video(self.model, self.context, self.context, self.latent, self.noise, 1, steps, cfg)


def _timed_video(part, nets, frames: int, size: int, first: bool, record: dict) -> dict:
    video = Video(nets, frames, size, part.options.get("compile"))
    entry: dict = {"frames": frames, "padded_frames": video.total, "windows": video.windows, "times_s": []}
    record["videos"].append(entry)
    if first and part.warmup_steps:
        t0 = time.perf_counter()
        video.sample(part.warmup_steps)
        _sync()
        entry["warmup_s"] = round(time.perf_counter() - t0, 3)
    for _ in range(part.runs):
        _reset_peak()
        t0 = time.perf_counter()
        video.sample(part.steps)
        _sync()
        entry["times_s"].append(round(time.perf_counter() - t0, 3))
        seconds = statistics.median(entry["times_s"])
        entry.update(seconds=seconds, s_per_frame=round(seconds / frames, 4), peak_gib=_peak_gib())
        if size == 512:
            entry["tflops"] = round(flops(video.total, size, part.steps, video.windows, 7.5) / seconds / 1e12, 1)
    return entry


def _compare(part, nets, nets32, size: int, record: dict) -> None:
    """One step of the same video in fp16 and fp32: relative difference of the fp16 result against fp32."""
    frames = part.frames[0]
    out16 = Video(nets, frames, size).sample(part.steps).float()
    out32 = Video(nets32, frames, size).sample(part.steps).float()
    diff = (out16 - out32).abs()
    record.update(frames=frames, finite=bool(out16.isfinite().all()),
                  max_rel=float(diff.max() / out32.abs().max()), mean_rel=float(diff.mean() / out32.abs().mean()))


def run_plan(parts, size: int, args, report, deadline_s: float, part_timer) -> int:
    """Set up once, then run each part under its own limit and the global deadline; one JSON line per part."""
    import torch

    from devtools.random_weights.networks import bootstrap, load_networks

    start = time.perf_counter()
    scratch = bootstrap()
    import comfy.model_management as mm

    if args.smoke:
        # Attention as ComfyUI runs it on an NVIDIA card: its CPU default asks psutil for free memory, which breaks
        # the compiled graph into one per module (part b would time recompilations, not the run).
        import comfy.ldm.modules.attention as attention

        attention.optimized_attention = attention.optimized_attention_masked = attention.attention_pytorch
    # The shapes file holds the full-size shapes; the smoke run's tiny networks take theirs from diffusers.
    shapes = json.loads(Path(args.shapes).read_text()) if args.shapes and not args.smoke else None
    config = "tiny" if args.smoke else "full"
    nets = load_networks(config, "fp16", args.workdir, scratch, shapes=shapes)
    device = mm.get_torch_device()
    report({"part": "setup", "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else str(device),
            "torch": torch.__version__, "comfyui": _comfyui_version(), "config": config, "size": size,
            "setup_s": round(time.perf_counter() - start, 1)})
    failed = 0
    peaks: dict[str, float | None] = {}
    for part in parts:
        left = deadline_s - (time.perf_counter() - start)
        limit = min(part.limit_s(size), left)
        record: dict = {"part": part.name, "what": part.what, "steps": part.steps, "limit_s": round(limit, 1),
                        "videos": []}
        if limit < 5:
            report({**record, "skipped": "the global deadline has passed"})
            continue
        t0 = time.perf_counter()
        try:
            with part_timer(limit) as timer:
                if part.options.get("compare"):
                    nets32 = load_networks(config, "fp32", args.workdir, scratch, shapes=shapes)
                    _compare(part, nets, nets32, size, record)
                    del nets32
                elif "cap_gib" in part.options:
                    record["cap_gib"] = part.options["cap_gib"]
                    with card_seen_as(part.options["cap_gib"]):
                        for frames in part.frames:
                            _timed_video(part, nets, frames, size, True, record)
                else:
                    for i, frames in enumerate(part.frames):
                        _timed_video(part, nets, frames, size, i == 0, record)
            record["cut_short"] = timer.fired
        except Exception as e:  # a part that fails (out of memory, a compile error) must not lose the others
            failed += 1
            record["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        record["seconds"] = round(time.perf_counter() - t0, 1)
        for v in record["videos"]:
            peaks[f"{part.name}/{v['frames']}"] = v.get("peak_gib")
        if part.name.startswith("d_") and peaks.get("a_eager/96") and record["videos"]:
            peak = record["videos"][-1].get("peak_gib")
            record["over_96_frame_peak_gib"] = None if peak is None else round(peak - peaks["a_eager/96"], 3)
        report(record)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    report({"part": "done", "seconds": round(time.perf_counter() - start, 1), "failed_parts": failed})
    return 1 if failed else 0


def _comfyui_version() -> str | None:
    try:
        import comfyui_version

        return comfyui_version.__version__
    except ImportError:
        return None
