"""``python -m bench.one_step_parity`` on the tiny config: the pack's step and the oracle's agree to float rounding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_tiny_one_step_parity_runs_and_agrees(comfy_dir):
    env = {**os.environ, "COMFYUI_PATH": str(comfy_dir)}
    done = subprocess.run([sys.executable, "-m", "bench.one_step_parity", "--config", "tiny", "--frames", "4",
                           "--latent", "8"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "one_step_parity" and result["control_frames"] == 4
    assert result["max_abs_diff"] < 1e-4 * max(1.0, result["max_abs_value"]), result
