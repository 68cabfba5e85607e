"""Time and peak RAM of the main command (``python -m scripts.animate``) here, for the README's "What to expect".

Runs the command as a user would (a fresh process per run: ComfyUI start-up and model loading included) on the bundled
demo (Mona Lisa + the 42-frame DensePose clip), ``--cpu``, with the model files in ``--models-dir`` (write real-size
random ones with ``python -m scripts.write_random_models --out DIR --full-magicanimate``: they cost what the real
files cost). Prints one JSON line per run and one per size with the medians:

    python -m bench.cpu_expectations --models-dir /data/ma-full-models --sizes 64 128 256 --steps 2 --repeats 3

Peak RAM is the child's own peak resident set (``wait4``'s ``ru_maxrss``), not the machine's. ``cpu_seconds`` (user +
system time of the run) is less disturbed than the wall time when other jobs share the machine.
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


def run_once(models_dir: Path, size: int, steps: int) -> dict:
    """One run of the main command at ``size`` x ``size``; wall seconds, peak RSS (GiB) and the exit status."""
    with tempfile.TemporaryDirectory(prefix="ma-cpu-bench-") as scratch:
        cmd = [sys.executable, "-m", "scripts.animate", "--models-dir", str(models_dir), "--cpu",
               "--width", str(size), "--height", str(size), "--steps", str(steps),
               "--output", str(Path(scratch) / "out.mp4")]
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        output = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {"size": size, "steps": steps, "seconds": round(seconds, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2), "exit": proc.returncode,
            "load_avg_1min_before": round(load_before, 2), "load_avg_1min_after": round(os.getloadavg()[0], 2),
            "tail": output.strip().splitlines()[-1:] if proc.returncode else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", type=Path, required=True)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    meta = {"cores": os.cpu_count(), "python": sys.version.split()[0]}
    for size in args.sizes:
        runs = []
        for i in range(args.repeats):
            result = run_once(args.models_dir, size, args.steps)
            runs.append(result)
            print(json.dumps({"bench": "cpu_expectations", "run": i, **result}), flush=True)
        ok = [r for r in runs if r["exit"] == 0]
        print(json.dumps({"bench": "cpu_expectations", "size": size, "steps": args.steps, "runs": len(ok),
                          "median_seconds": statistics.median(r["seconds"] for r in ok) if ok else None,
                          "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in ok) if ok else None,
                          "median_peak_rss_gib": statistics.median(r["peak_rss_gib"] for r in ok) if ok else None,
                          **meta}), flush=True)


if __name__ == "__main__":
    main()
