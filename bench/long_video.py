"""Peak RAM of a whole run, from a driving video file to the saved mp4, against the number of frames: the IMAGE path
(core Load Video -> Get Video Components -> Pose Control ... VAE Decode -> Create Video -> Save Video) and the
streaming path (Pose Control reading the VIDEO, MagicAnimate Save Video decoding in chunks).

Each run is ``python -m scripts.animate`` in its own process (tiny random-weight networks, 1 step, on the CPU), so its
peak resident size (``ru_maxrss`` from ``wait4``) is the whole graph's, loaders and decoding included. Prints one JSON
line per run, then one per path and size with the RAM each extra frame costs (the slope between the shortest and the
longest video)::

    python -m bench.long_video --frames 100,1000 --sizes 64,256            # about 10 minutes on 2 cores
    python -m bench.long_video --frames 100,1000,3000 --sizes 64,256 --repeats 3
    python -m bench.long_video --fake-cuda --frames 100,1000,3000 --sizes 64,256

The driving video is a synthetic DensePose-like clip (viridis colours on the dark purple background) at
``--source-size`` (512 by default, as a real DensePose video), H.264; the output is ``--sizes`` square.

``--fake-cuda``: peak device memory instead, from ``bench.fake_gpu_dry_run`` (the sampling on a fake CUDA device,
tiny networks, fp16, 2 steps, exact live bytes), one fresh process per point. The sampling is all that runs on the
device and is the same on both paths; the decoding and encoding around it stay in host memory (streaming: a chunk at
a time; VAE decoding goes through the device a batch at a time on both). Each slope is also given in latent-video
copies (float32 latents, as ComfyUI's samplers keep them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Path name -> ``scripts.animate --workflow`` value.
WORKFLOWS = {"image": "basic", "streaming": "long_video"}


def write_pose_video(path: Path, frames: int, size: int, fps: int = 25) -> None:
    """A DensePose-like H.264 clip: a viridis-coloured figure moving on the dark purple background."""
    import av
    import numpy as np

    background = np.array([68, 1, 84], np.uint8)  # viridis(0), DensePose's background in MagicAnimate's videos
    body = np.array([[59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = np.broadcast_to(background, (size, size, 3)).copy()
            cx = size * (0.35 + 0.3 * ((i % 50) / 50))
            for part, colour in enumerate(body):
                cy = size * (0.2 + 0.2 * part)
                inside = (xx - cx) ** 2 / (0.08 * size) ** 2 + (yy - cy) ** 2 / (0.1 * size) ** 2 < 1
                image[inside] = colour
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def run_once(models: Path, video: Path, size: int, workflow: str, out: Path) -> dict:
    """One ``scripts.animate`` run; its peak resident size in MiB, wall time and exit status."""
    command = [sys.executable, "-m", "scripts.animate", "--models-dir", str(models), "--video", str(video),
               "--width", str(size), "--height", str(size), "--steps", "1", "--cpu", "--workflow", workflow,
               "--output", str(out)]
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"scripts.animate --workflow {workflow} failed ({code}):\n{err[-3000:]}")
    return {"peak_rss_mib": usage.ru_maxrss / 1024, "wall_s": wall}


def fake_cuda_peak(frames: int, size: int) -> dict:
    """Peak device bytes (and weights' bytes) of the sampling on a fake CUDA device, in a fresh process."""
    command = [sys.executable, "-m", "bench.fake_gpu_dry_run", "--config", "tiny", "--frames", str(frames), "--size",
               str(size), "--steps", "2", "--dtypes", "fp16", "--budgets-gb", "24"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench.fake_gpu_dry_run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    return {"padded_frames": result["padded_frames"], "peak_bytes": result["peak_gib"]["total_bytes"],
            "weights_bytes": result["peak_gib"]["weights_bytes"], "wall_s": time.perf_counter() - start}


def fake_cuda_main(frames: list[int], sizes: list[int]) -> int:
    for size in sizes:
        points = {}
        for n in frames:
            point = points[n] = fake_cuda_peak(n, size)
            print(json.dumps({"path": "sampling (both paths)", "device": "fake cuda", "frames": n, "size": size,
                              "peak_device_mib": round(point["peak_bytes"] / 2**20, 2),
                              "above_weights_mib": round((point["peak_bytes"] - point["weights_bytes"]) / 2**20, 2),
                              "wall_s": round(point["wall_s"], 1)}), flush=True)
        if len(points) > 1:
            lo, hi = min(points), max(points)
            per_frame = ((points[hi]["peak_bytes"] - points[lo]["peak_bytes"])
                         / (points[hi]["padded_frames"] - points[lo]["padded_frames"]))
            latent_frame = 4 * (size // 8) ** 2 * 4
            print(json.dumps({"path": "sampling (both paths)", "device": "fake cuda", "size": size, "frames": [lo, hi],
                              "bytes_per_frame": round(per_frame, 1),
                              "latent_copies": round(per_frame / latent_frame, 3),
                              "mib_per_frame_at_512": round(per_frame / latent_frame * 4 * 64 * 64 * 4 / 2**20, 3)}),
                  flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", default="100,1000", help="comma-separated frame counts (default 100,1000)")
    parser.add_argument("--sizes", default="64,256", help="comma-separated output sizes (default 64,256)")
    parser.add_argument("--paths", default="image,streaming", help="image, streaming or both (default both)")
    parser.add_argument("--source-size", type=int, default=512, help="driving video size (default 512)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per point; the median is reported")
    parser.add_argument("--models-dir", type=Path, help="random-weight models (default: written to a temp folder)")
    parser.add_argument("--fake-cuda", action="store_true", help="peak device memory of the sampling on a fake CUDA "
                                                                 "device instead of whole runs' peak RAM")
    args = parser.parse_args(argv)
    frames = [int(v) for v in args.frames.split(",")]
    sizes = [int(v) for v in args.sizes.split(",")]
    if args.fake_cuda:
        return fake_cuda_main(frames, sizes)
    paths = args.paths.split(",")
    with tempfile.TemporaryDirectory(prefix="magicanimate-long-video-") as scratch:
        work = Path(scratch)
        models = args.models_dir
        if models is None:
            models = work / "models"
            subprocess.run([sys.executable, "-m", "scripts.write_random_models", "--out", str(models)], cwd=REPO,
                           check=True, stdout=subprocess.DEVNULL)
        results: dict[tuple[str, int], dict[int, float]] = {}
        for n in frames:
            video = work / f"pose_{n}.mp4"
            write_pose_video(video, n, args.source_size)
            for size in sizes:
                for path in paths:
                    runs = [run_once(models, video, size, WORKFLOWS[path], work / f"out_{path}_{n}_{size}.mp4")
                            for _ in range(args.repeats)]
                    peak = statistics.median(r["peak_rss_mib"] for r in runs)
                    wall = statistics.median(r["wall_s"] for r in runs)
                    results.setdefault((path, size), {})[n] = peak
                    print(json.dumps({"path": path, "frames": n, "size": size, "source_size": args.source_size,
                                      "peak_rss_mib": round(peak, 1), "wall_s": round(wall, 2),
                                      "repeats": args.repeats}), flush=True)
        for (path, size), peaks in results.items():
            if len(peaks) > 1:
                lo, hi = min(peaks), max(peaks)
                print(json.dumps({"path": path, "size": size, "frames": [lo, hi],
                                  "mib_per_frame": round((peaks[hi] - peaks[lo]) / (hi - lo), 4)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
