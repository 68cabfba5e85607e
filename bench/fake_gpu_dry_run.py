"""Fake-GPU dry run: MagicAnimate's sampling on a fake CUDA device (``FakeTensorMode``) on a machine without a GPU.

Fake tensors do no arithmetic, but a tensor on the wrong device or of the wrong dtype raises exactly as on a GPU, so
this proves the CUDA path (fp16/bf16 weights, ComfyUI's CPU-side text context) end to end, and it counts FLOPs per
network (``torch.utils.flop_counter``) and device memory (live fake CUDA storages, by category) per window.

What runs for real: ComfyUI's CFG guider and reference-DDIM sampler, its context-window handler and every MagicAnimate
wrapper and patch (motion modules, joint GroupNorm, reference attention, per-frame ControlNet cache), in the reference
settings (16-frame windows, overlap 4, CFG 7.5). Scalar reads of fake tensors (``.item()``: sampler sigma checks,
``count_nonzero``, the per-step sigma read) return 1: they only steer branches. What is built directly on the fake
device instead of through the pack's file loaders: the three networks (random weights in the real layouts:
ComfyUI's SD1.5 ``UNetModel`` twice and ``cldm.ControlNet``, plus the ``MotionModuleSet``), because loading
real parameters and then moving them with ``Module.to()`` under fake mode fails ("Couldn't swap"). ComfyUI's model
loading is replaced by ``patch_model`` without moving weights (they already live on the device);
``get_torch_device`` says CUDA, free/total memory say the budget, and the text context stays on the CPU (ComfyUI's
intermediate device) as on a real machine.

    python -m bench.fake_gpu_dry_run                                  # full size, fp16+bf16, 8 and 24 GB, 48 frames
    python -m bench.fake_gpu_dry_run --config tiny --frames 20 --size 64 --steps 1

Prints one JSON line per (dtype, budget).

Attention runs as ComfyUI runs it on an NVIDIA card (its pytorch attention: SDPA, flash kernel in fp16/bf16), not as
on a CPU (sub-quadratic attention, whose chunks grow with the free memory it is told about).

Memory figures are this script's own accounting of live fake CUDA storages (not MemTracker): ``peak_gib`` (weights,
activations and caches, the running peak after each window, live bytes at the peak by the network that allocated
them, and the peak while each network ran). ``memory_estimate_gib``: what the MagicAnimate MODEL told ComfyUI
(``prepare_sampling``: both CFG halves of a window and one half, which decide the weight loading; ``at_unet_batch``:
for the batch ComfyUI then chose per UNet call, ``unet_batch``, with its parts) and ComfyUI's own SD1.5 figure for
a window; ``estimate_over_measured`` = ``at_unet_batch`` / measured activations and caches.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench.fake_cuda import DeviceMemory, flash_sdpa, tracking_allocations

REPO = Path(__file__).resolve().parents[1]

#: Reference FLOPs per output frame per step at 512x512 (MagicAnimate's cost per network, 2 x MAC, both CFG halves,
#: windows of 16 with overlap 4 -> 4/3 frame-instances per frame).
TMAC_DENOISER, TMAC_REFERENCE, TMAC_CONTROLNET, TMAC_ENCODER = 0.55, 0.045, 0.14, 0.40


def reference_flops_per_frame(frames: int, windows: int, size: int, steps: int) -> dict[str, float]:
    scale = (size / 512) ** 2 * 2e12 * steps / frames
    return {"unet": windows * 16 * (2 * TMAC_DENOISER + TMAC_REFERENCE) * scale,
            "controlnet": frames * TMAC_CONTROLNET * scale, "appearance_encoder": TMAC_ENCODER * scale}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=["full", "tiny"], default="full")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=1, help="sampler steps (every step costs the same)")
    ap.add_argument("--dtypes", nargs="+", default=["fp16", "bf16"])
    ap.add_argument("--budgets-gb", type=float, nargs="+", default=[8.0, 24.0])
    args = ap.parse_args(argv)

    import torch

    if "comfy" not in sys.modules:
        from devtools.comfy_env import bootstrap_inprocess, prepare_comfyui_copy

        scratch = Path(tempfile.mkdtemp(prefix="ma-fake-"))
        bootstrap_inprocess(prepare_comfyui_copy(scratch / "ComfyUI"), cpu=True)
    results = []
    for dtype_name in args.dtypes:
        for budget in args.budgets_gb:
            results.append(run_one(args, {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name], budget))
            print(json.dumps(results[-1]), flush=True)
    return results


def run_one(args, dtype, budget_gb: float) -> dict:
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
    import comfy.supported_models
    import torch
    from comfy.patcher_extension import WrappersMP
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    import magicanimate.comfy_adapter.appearance as appearance_module
    from devtools.random_weights.model_files import FULL, TINY
    from magicanimate.comfy_adapter.conditioning import apply_conditioning
    from magicanimate.comfy_adapter.context import SegmentOptions
    from magicanimate.comfy_adapter.loaders import AppearanceEncoderModel, sd15_unet_config
    from magicanimate.comfy_adapter.memory_required import window_memory_parts_for, window_memory_required
    from magicanimate.comfy_adapter.payloads import Appearance, PoseCondition
    from magicanimate.comfy_adapter.sampling import sample_video
    from magicanimate.comfy_adapter.temporal import apply_temporal
    from magicanimate.motion_module import MotionModule, MotionModuleSet
    from magicanimate.schedule import ddim_sigmas
    from magicanimate.windows import padded_length

    cfg = FULL if args.config == "full" else TINY
    chans, ctx_dim = cfg["block_out_channels"], cfg["cross_attention_dim"]
    cuda = torch.device("cuda", 0)
    budget = int(budget_gb * 1e9)
    meta = {"conv_in.weight": torch.empty(chans[0], 4, 3, 3, device="meta"),
            "down_blocks.0.attentions.0.proj_in.weight": torch.empty(chans[0], chans[0], 1, 1, device="meta"),
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight":
                torch.empty(chans[0], ctx_dim, device="meta")}
    for i, c in enumerate(chans):
        meta[f"down_blocks.{i}.resnets.0.conv2.weight"] = torch.empty(c, c, 3, 3, device="meta")
    unet_config = sd15_unet_config(meta, "fake", "")
    memory = DeviceMemory()

    saved = {name: getattr(mm, name) for name in ("get_torch_device", "get_free_memory", "get_total_memory",
                                                  "load_models_gpu", "unet_offload_device", "soft_empty_cache",
                                                  "pytorch_attention_flash_attention")}
    loads: list[dict] = []

    def load_models_gpu(models, memory_required=0, minimum_memory_required=None, **k):
        # Weights already live on the (fake) device: patch, inject, no move. The figures ComfyUI would decide with
        # are recorded (prepare_sampling's estimate for the window batch and for one cond chunk).
        loads.append({"memory_required": memory_required, "minimum_memory_required": minimum_memory_required})
        for m in models:
            if not m.is_injected:
                m.patch_model(device_to=None, load_weights=False)

    mm.get_torch_device = lambda: cuda
    mm.unet_offload_device = lambda: cuda
    mm.get_free_memory = lambda dev=None, torch_free_too=False: ((budget - memory.current,) * 2 if torch_free_too
                                                                 else budget - memory.current)
    mm.get_total_memory = lambda dev=None, torch_total_too=False: (budget, budget) if torch_total_too else budget
    mm.load_models_gpu = load_models_gpu
    mm.soft_empty_cache = lambda force=False: None
    # What the CUDA runtime would answer about its one device (newer ComfyUI asks before sampling on "cuda:0").
    saved_cuda = {name: getattr(torch.cuda, name) for name in ("current_device", "set_device")}
    torch.cuda.current_device = lambda: 0
    torch.cuda.set_device = lambda device: None
    # Attention as ComfyUI runs it on an NVIDIA card: its pytorch attention, i.e. SDPA with the flash kernel (the
    # memory-efficient kernel for fp32 or masks). Fake SDPA would pick the math kernel, materialising every
    # (tokens x tokens) map; ComfyUI's CPU default (sub-quadratic attention) sizes its chunks from free memory.
    import comfy.ldm.modules.attention as comfy_attention
    saved_attention = (comfy_attention.optimized_attention, comfy_attention.optimized_attention_masked,
                       comfy.ops.scaled_dot_product_attention)
    mm.pytorch_attention_flash_attention = lambda: True
    comfy_attention.optimized_attention = comfy_attention.optimized_attention_masked = comfy_attention.attention_pytorch
    comfy.ops.scaled_dot_product_attention = flash_sdpa
    import comfy.sampler_helpers
    comfy.sampler_helpers.comfy.model_management.load_models_gpu = load_models_gpu

    flops: dict[str, float] = {"unet": 0.0, "motion_modules": 0.0, "controlnet": 0.0, "appearance_encoder": 0.0}
    counter = FlopCounterMode(display=False)
    window_peaks: list[int] = []
    originals = {}

    def attribute(name, fn):
        def wrapped(*a, **k):
            before = counter.get_total_flops()
            memory.phase.append(name)
            try:
                return fn(*a, **k)
            finally:
                memory.phase.pop()
                flops[name] += counter.get_total_flops() - before
        return wrapped

    unet_batches: list[int] = []

    def unet_phase(executor, x, *a, **k):
        unet_batches.append(x.shape[0])
        memory.phase.append("unet")
        try:
            return executor(x, *a, **k)
        finally:
            memory.phase.pop()

    fake = FakeTensorMode(allow_non_fake_inputs=True)
    impls = torch._subclasses.fake_impls.op_implementations_dict
    saved_item = {op: impls[op] for op in (torch.ops.aten.item.default, torch.ops.aten._local_scalar_dense.default)}

    def scalar_read(fake_mode, func, arg):  # fake tensors hold no values; a scalar read only steers a branch
        return True if arg.dtype == torch.bool else (1.0 if arg.dtype.is_floating_point else 1)

    for op in saved_item:
        impls[op] = scalar_read
    try:
        with fake, tracking_allocations(memory):
            ops = comfy.ops.pick_operations(dtype, None)

            def unet():
                mc = comfy.supported_models.SD15(unet_config)
                mc.set_inference_dtype(dtype, None)
                model = mc.get_model({}, "", device=cuda)
                return comfy.model_patcher.ModelPatcher(model, load_device=cuda, offload_device=cuda)

            base, enc = unet(), unet()
            weights = {"unet": sum(p.nbytes for p in base.model.parameters()),
                       "appearance_encoder": sum(p.nbytes for p in enc.model.parameters())}
            motion = MotionModuleSet(chans, ops=ops, dtype=dtype, device=cuda)  # becomes part of the UNet's tree
            weights["motion_modules"] = sum(p.nbytes for p in motion.parameters())
            cn_cfg = dict(unet_config)
            cn_cfg.pop("out_channels")
            cn_cfg.update(operations=ops, dtype=dtype, device=cuda, hint_channels=3)
            control_model = comfy.cldm.cldm.ControlNet(**cn_cfg)
            weights["controlnet"] = sum(p.nbytes for p in control_model.parameters())
            control = comfy.controlnet.ControlNet(control_model, load_device=cuda, manual_cast_dtype=None)
            temporal = apply_temporal(base, motion, model_is_private=True)

            frames = args.frames
            total = padded_length(frames)
            h = args.size // 8
            segments = SegmentOptions()
            windows = len(segments.windows(total))
            # Inputs as the nodes hand them over: on the CPU (ComfyUI's intermediate device), float32.
            poses = torch.rand(frames, args.size, args.size, 3)
            ref = torch.randn(1, 4, h, h)
            text = [[torch.randn(1, 77, ctx_dim), {}]]
            neg = [[torch.randn(1, 77, ctx_dim), {}]]
            noise = torch.randn(total, 4, h, h)
            appearance = Appearance(AppearanceEncoderModel(enc, [], "fake"), ref)
            model, state = apply_conditioning(temporal, appearance, PoseCondition(control, poses), segments,
                                              on_window=lambda: window_peaks.append(memory.peak))
            originals["cn"] = control_model.forward
            control_model.forward = attribute("controlnet", control_model.forward)
            originals["enc"] = appearance_module.run_encoder
            appearance_module.run_encoder = attribute("appearance_encoder", appearance_module.run_encoder)
            originals["mm"] = MotionModule.forward
            MotionModule.forward = attribute("motion_modules", MotionModule.forward)
            model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "fake_gpu_dry_run", unet_phase)
            weights_total = memory.current
            memory.reset_peak()
            memory.phase.append("sampler")
            with counter:
                # As Temporal Sample hands them over: an all-zero start expanded from one frame, the pack's own
                # noise (scaled in place).
                out = sample_video(model, text, neg, torch.zeros(1, 4, h, h).expand(total, 4, h, h), noise, 0, 25,
                                   7.5, sigmas=ddim_sigmas(25)[:args.steps + 1], noise_is_scratch=True)
            assert out.shape == (total, 4, h, h)
            memory.phase.pop()
            flops["unet"] = counter.get_total_flops() - sum(v for k, v in flops.items() if k != "unet")
            window = min(segments.length, total)
            comfy_default = type(model.model).memory_required(model.model, [2 * window, 4, h, h])
            run_batch = max(unet_batches)
            ours = window_memory_required(model, [run_batch, 4, h, h], window)
            ours_parts = window_memory_parts_for(model, [run_batch, 4, h, h], window)
    finally:
        impls.update(saved_item)
        for name, fn in saved.items():
            setattr(mm, name, fn)
        for name, fn in saved_cuda.items():
            setattr(torch.cuda, name, fn)
        (comfy_attention.optimized_attention, comfy_attention.optimized_attention_masked,
         comfy.ops.scaled_dot_product_attention) = saved_attention
        if "cn" in originals:
            control_model.forward = originals["cn"]
        if "enc" in originals:
            appearance_module.run_encoder = originals["enc"]
        if "mm" in originals:
            MotionModule.forward = originals["mm"]
    per_frame = {k: v / frames / args.steps for k, v in flops.items()}
    activations = memory.peak - weights_total
    ref_pf = reference_flops_per_frame(frames, windows, args.size, 1)
    ours_unet = per_frame["unet"] + per_frame["motion_modules"]
    gib = 2 ** 30
    return {
        "bench": "fake_gpu_dry_run", "config": args.config, "dtype": str(dtype).replace("torch.", ""),
        "budget_gb": budget_gb, "device": "fake cuda:0", "frames": frames, "padded_frames": total, "windows": windows,
        "size": args.size, "steps": args.steps, "windows_run": state.stats["windows"],
        "controlnet_frames": state.stats["control_frames"], "encoder_runs": state.stats["encoder_runs"],
        "weights_gib": {k: round(v / gib, 3) for k, v in weights.items()},
        "peak_gib": {"weights": round(weights_total / gib, 3),
                     "activations_and_caches": round(activations / gib, 3),
                     "total": round(memory.peak / gib, 3),
                     "total_gb": round(memory.peak / 1e9, 3),
                     "total_bytes": memory.peak, "weights_bytes": weights_total,
                     "at_peak_by_allocator": {k: round(v / gib, 3) for k, v in memory.at_peak.items() if v},
                     "activations_while": {k: round((v - weights_total) / gib, 4)
                                           for k, v in memory.peak_while.items()},
                     "per_window": [round(p / gib, 3) for p in window_peaks[:8]]},
        "unet_batch": run_batch, "cond_chunks_per_call": run_batch // min(segments.length, total),
        "memory_estimate_gib": {
            "prepare_sampling": round(loads[0]["memory_required"] / gib, 3) if loads else None,
            "prepare_sampling_minimum": round(loads[0]["minimum_memory_required"] / gib, 3) if loads else None,
            "at_unet_batch": round(ours / gib, 3),
            "parts_at_unet_batch": {k: round(v / gib, 3) for k, v in ours_parts.items()},
            "comfy_default_sd15": round(comfy_default / gib, 3)},
        "estimate_over_measured": round(ours / activations, 3),
        "tflop_per_frame": {k: round(v / 1e12, 4) for k, v in per_frame.items()},
        "reference_tflop_per_frame": {k: round(v / 1e12, 4) for k, v in ref_pf.items()},
        "ratio_to_reference": {"unet_with_motion": round(ours_unet / ref_pf["unet"], 3),
                               "controlnet": round(per_frame["controlnet"] / ref_pf["controlnet"], 3),
                               "appearance_encoder": round(per_frame["appearance_encoder"]
                                                           / ref_pf["appearance_encoder"], 3)},
    }


if __name__ == "__main__":
    main()
