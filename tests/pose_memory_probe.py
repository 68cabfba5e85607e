"""One Pose Control -> Temporal Sample run in a fresh process, printing its peak RAM as JSON (for the memory tests).

A fresh process per measurement: in a long-lived one, the C heap keeps what earlier runs freed and hides how much a
later run needs. Usage, from the repository root (ComfyUI tree already prepared, tiny files written)::

    python -m tests.pose_memory_probe COMFY_DIR TINY_ROOT VIDEO {video|image} SIZE

It prints ``{"growth": bytes, "seconds": s, "frames": n}``: the peak resident memory while Temporal Sample runs
(polled every millisecond) above the resident memory before Pose Control ran (after set-up: ComfyUI, the tiny
networks, a warm-up run, and for ``image`` core's decoded IMAGE batch, which the IMAGE path's user holds anyway).
Run it with ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc returns freed tensors to the OS at once.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path


def main(comfy_dir: str, tiny_root: str, video_path: str, kind: str, size: int) -> dict:
    from devtools.comfy_env import bootstrap_inprocess

    bootstrap_inprocess(Path(comfy_dir))
    import psutil
    import torch
    from comfy_api.latest import InputImpl

    from devtools.pack import pack_nodes
    from magicanimate.comfy_adapter.loaders import (
        load_appearance_encoder,
        load_densepose_controlnet,
        load_temporal_model,
    )
    from magicanimate.comfy_adapter.payloads import Appearance

    root = Path(tiny_root)
    torch.manual_seed(0)
    temporal = load_temporal_model(str(root / "temporal_attention.ckpt"), torch.float32)
    encoder = load_appearance_encoder(str(root / "appearance_encoder"), torch.float32)
    control = load_densepose_controlnet(str(root / "densepose_controlnet"), torch.float32)
    video = InputImpl.VideoFromFile(video_path)
    pose_frames = video if kind == "video" else video.get_components().images
    by_id = pack_nodes()
    latent = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    ctx = [[torch.zeros(1, 77, 32), {}]]

    def animate(frames, measure=lambda: None) -> torch.Tensor:
        pose = by_id["MagicAnimatePoseControl"].execute(control, frames).result[0]
        measure()
        out = by_id["MagicAnimateTemporalSample"].execute(temporal.model, Appearance(encoder, latent), pose, ctx,
                                                          ctx, seed=1, steps=1)
        return out.result[0]["samples"]

    # A warm-up on 16 frames: what the first run allocates once (model loading, thread pools) is not measured.
    animate(torch.zeros(16, 8, 8, 3))
    process = psutil.Process()
    before = peak = process.memory_info().rss
    running = False

    def poll() -> None:
        nonlocal peak
        while running:
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.001)

    thread = threading.Thread(target=poll, daemon=True)

    def start_polling() -> None:
        # From after Pose Control on: its DensePose style check needs a fixed 200 MB for a moment (cdist over
        # 200,000 pixels) that would hide any per-frame growth; what Pose Control keeps still counts.
        nonlocal running
        running = True
        thread.start()

    start = time.perf_counter()
    frames = int(animate(pose_frames, start_polling).shape[0])
    seconds = time.perf_counter() - start
    running = False
    thread.join()
    peak = max(peak, process.memory_info().rss)
    return {"growth": peak - before, "seconds": round(seconds, 2), "frames": frames}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))))
