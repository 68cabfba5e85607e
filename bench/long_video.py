"""Peak RAM of a whole run, from a driving video file to the saved mp4, against the number of frames: the IMAGE path
(core Load Video -> Get Video Components -> Pose Control ... VAE Decode -> Create Video -> Save Video) and the
streaming path (Pose Control reading the VIDEO, MagicAnimate Save Video decoding in chunks).

Each run is ``python -m scripts.animate`` in its own process (tiny random-weight networks, 1 step, on the CPU) under
:mod:`bench.node_peaks`, which records the peak resident size of each node (and of the setup before them): the
largest is the whole run's, loaders and decoding included. Prints one JSON line per run, then one per path and size
with the RAM each extra frame costs, for the whole run and for each node's peak (the slope between the shortest and
the longest video; a node's slope is what that node's work adds per frame, which the whole run's peak hides while an
earlier, larger peak such as model loading dominates it; its growth, peak minus the resident size when it started,
leaves out what earlier nodes left resident). A point that the growth measured at two shorter videos puts
above ``--max-rss-gib`` (default: 90 % of the memory available) is not run but reported as not fitting::

    python -m bench.long_video --frames 100,1000 --sizes 64,256            # about 10 minutes on 2 cores
    python -m bench.long_video --frames 100,1000,3000 --sizes 64,256 --repeats 3
    python -m bench.long_video --frames 100,1000,3000 --sizes 64 --paths streaming --vae-decoder-channels 32
    python -m bench.long_video --fake-cuda --frames 100,1000,3000 --sizes 64,256

Runs use glibc's malloc with a fixed mmap threshold (:data:`devtools.proc_memory.FIXED_MALLOC`), so that resident
size follows what the program holds rather than what the allocator kept from freed blocks; ``--default-malloc``
measures as ComfyUI runs, with about 100 MB of run-to-run noise.

``--vae-decoder-channels 32`` decodes with a random VAE whose decoder is a quarter as wide (ComfyUI 0.33 only):
decoding is most of a CPU run's time, and the width does not change what grows with the number of frames.

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
from functools import reduce
from operator import getitem
from pathlib import Path

from devtools.proc_memory import FIXED_MALLOC, available_bytes
from magicanimate.model_layout import SD_VAE

REPO = Path(__file__).resolve().parents[1]
#: Path name -> ``scripts.animate --workflow`` value.
WORKFLOWS = {"image": "basic", "streaming": "long_video"}
SD_VAE_FILE = SD_VAE.name  # in models/vae/


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


def run_once(models: Path, video: Path, size: int, workflow: str, out: Path, default_malloc: bool = False) -> dict:
    """One ``scripts.animate`` run under :mod:`bench.node_peaks`: its peak resident size in MiB, the peak of each
    node, and the wall time. Unless ``default_malloc``, glibc's mmap threshold is fixed (see :data:`FIXED_MALLOC`)."""
    peaks = out.with_suffix(".peaks.json")
    command = [sys.executable, "-m", "bench.node_peaks", str(peaks), "--", "--models-dir", str(models), "--video",
               str(video), "--width", str(size), "--height", str(size), "--steps", "1", "--cpu", "--workflow",
               workflow, "--output", str(out)]
    start = time.perf_counter()
    env = {**os.environ, **({} if default_malloc else FIXED_MALLOC)}
    done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace")
        raise SystemExit(f"scripts.animate --workflow {workflow} failed ({done.returncode}):\n{err[-3000:]}")
    result = json.loads(peaks.read_text())
    phases = [p for p in result["phases"] if p["phase"] != "after"]  # "after": the run's end, nothing left to do
    # "CLIPTextEncode 7": a graph may hold a class more than once (the two prompts)
    named = {f"{p['class_type']} {p['phase']}" if p["class_type"] else p["phase"]: p for p in phases}
    nodes = {name: p["peak_rss_mib"] for name, p in named.items()}
    growth = {name: round(p["peak_rss_mib"] - p["start_rss_mib"], 2) for name, p in named.items()}
    heap_free = {name: p["end_heap_mib"].get("free") for name, p in named.items()}
    return {"peak_rss_mib": result["peak_rss_mib"], "nodes": nodes, "growth": growth, "heap_free": heap_free,
            "wall_s": wall}


def per_frame(points: dict[int, dict], *key: str, frames: str | None = None) -> float:
    """How much ``point[key[0]][key[1]]...`` grows per frame from the shortest video measured to the longest
    (``points``: frame count -> point). ``frames``: the point's key holding the count to divide by (e.g. the padded
    count), where that is not the video's."""
    lo, hi = min(points), max(points)
    span = hi - lo if frames is None else points[hi][frames] - points[lo][frames]
    return (reduce(getitem, key, points[hi]) - reduce(getitem, key, points[lo])) / span


def narrow_vae_models(models: Path, into: Path, channels: int) -> Path:
    """A models folder like ``models`` (its files linked, not copied) whose SD VAE has a decoder ``channels`` wide
    instead of 128 (every decoder dimension that is a multiple of 128 scaled by ``channels / 128``; the encoder, used
    once for the reference photo, is unchanged).

    Decoding is most of a CPU run's time at 256x256; a narrow decoder makes long runs affordable without changing
    what grows with the number of frames (latents in, one chunk of pixels at a time out). ComfyUI 0.33 reads the
    decoder's width from ``decoder.conv_in.weight``; 0.3.75 cannot load such a VAE.
    """
    from safetensors.torch import load_file, save_file

    for entry in models.rglob("*"):
        target = into / entry.relative_to(models)
        if entry.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif entry.name != SD_VAE_FILE:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(entry.resolve())
    vae = load_file(models / "vae" / SD_VAE_FILE)
    for key, value in vae.items():
        if key.startswith("decoder."):
            shape = [d * channels // 128 if d % 128 == 0 else d for d in value.shape]
            vae[key] = value[tuple(slice(0, d) for d in shape)].clone()
    save_file(vae, into / "vae" / SD_VAE_FILE)
    return into


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
            grows = per_frame(points, "peak_bytes", frames="padded_frames")
            latent_frame = 4 * (size // 8) ** 2 * 4
            print(json.dumps({"path": "sampling (both paths)", "device": "fake cuda", "size": size,
                              "frames": [min(points), max(points)], "bytes_per_frame": round(grows, 1),
                              "latent_copies": round(grows / latent_frame, 3),
                              "mib_per_frame_at_512": round(grows / latent_frame * 4 * 64 * 64 * 4 / 2**20, 3)}),
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
    parser.add_argument("--vae-decoder-channels", type=int, default=128,
                        help="width of the random SD VAE's decoder (default 128, the real one; e.g. 32 makes long "
                             "runs about 3x faster; needs ComfyUI 0.33)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="glibc's default malloc, as ComfyUI runs (noisier: see FIXED_MALLOC) instead of a fixed "
                             "mmap threshold")
    parser.add_argument("--max-rss-gib", type=float, help="skip a point, reported as not fitting, when the growth "
                        "measured at two shorter videos puts its peak above this (default: 90%% of MemAvailable)")
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
        if args.vae_decoder_channels != 128:
            models = narrow_vae_models(models, work / "narrow-vae-models", args.vae_decoder_channels)
        results: dict[tuple[str, int], dict[int, dict]] = {}
        limit_mib = args.max_rss_gib * 1024 if args.max_rss_gib else 0.9 * available_bytes() / 2**20
        for n in frames:
            video = work / f"pose_{n}.mp4"
            write_pose_video(video, n, args.source_size)
            for size in sizes:
                for path in paths:
                    points = results.get((path, size), {})
                    if len(points) > 1:  # the growth measured so far says whether this point fits
                        hi = max(points)
                        expected = points[hi]["peak_rss_mib"] + per_frame(points, "peak_rss_mib") * (n - hi)
                        if expected > limit_mib:
                            print(json.dumps({"path": path, "frames": n, "size": size, "does_not_fit": True,
                                              "expected_peak_rss_mib": round(expected), "limit_mib": round(limit_mib),
                                              "from_frames": [min(points), hi]}), flush=True)
                            continue
                    runs = [run_once(models, video, size, WORKFLOWS[path], work / f"out_{path}_{n}_{size}.mp4",
                                     args.default_malloc) for _ in range(args.repeats)]
                    point = results.setdefault((path, size), {})[n] = {
                        "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
                        **{key: {node: statistics.median(r[key][node] for r in runs) for node in runs[0][key]}
                           for key in ("nodes", "growth")},
                        "heap_free": runs[0]["heap_free"],
                    }
                    print(json.dumps({"path": path, "frames": n, "size": size, "source_size": args.source_size,
                                      "vae_decoder_channels": args.vae_decoder_channels,
                                      "malloc": "default" if args.default_malloc else "fixed mmap threshold",
                                      "peak_rss_mib": round(point["peak_rss_mib"], 1),
                                      "peak_rss_mib_runs": [round(r["peak_rss_mib"], 1) for r in runs],
                                      "node_peak_rss_mib": point["nodes"],
                                      "node_growth_mib": point["growth"],
                                      "node_end_heap_free_mib": point["heap_free"],
                                      "wall_s": round(statistics.median(r["wall_s"] for r in runs), 2),
                                      "repeats": args.repeats}), flush=True)
        for (path, size), points in results.items():
            if len(points) > 1:
                nodes = {key: {node: round(per_frame(points, key, node) * 1024, 2) for node in points[min(points)][key]}
                         for key in ("nodes", "growth")}
                print(json.dumps({"path": path, "size": size, "frames": [min(points), max(points)],
                                  "kib_per_frame": round(per_frame(points, "peak_rss_mib") * 1024, 2),
                                  "node_peak_kib_per_frame": nodes["nodes"],
                                  "node_growth_kib_per_frame": nodes["growth"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
