"""``python -m bench.gpu_suite --dry`` without a GPU: its plan names every part and each command it runs parses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_suite_dry_plan_covers_every_part_and_its_commands_parse():
    out = subprocess.run([sys.executable, "-m", "bench.gpu_suite", "--dry"], capture_output=True, text=True,
                         timeout=120, check=True, cwd=REPO).stdout
    parts = [json.loads(line) for line in out.splitlines()]
    assert [p["suite"] for p in parts] == ["parity", "speed", "speed_960_memory", "compiled", "capped_6gib"]
    for part in parts:
        dash_m, module, *flags = part["command"]
        assert dash_m == "-m" and (REPO / (module.replace(".", "/") + ".py")).is_file()
        helptext = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                                  timeout=120, check=True, cwd=REPO).stdout
        for flag in (f for f in flags if f.startswith("--")):
            assert flag in helptext, (part["suite"], flag)
