"""``bench.gpu_first_contact``: the plan fits a lent GPU's 8 minutes, and the whole orchestration runs on a CPU (its
``--smoke`` plan, tiny networks) writing every part's JSON line as it finishes, on one shared weight set."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_first_contact

REPO = Path(__file__).resolve().parents[2]
PARTS = ["a_eager", "b_compile", "c_8gib_card", "d_960_frames", "e_fp16_vs_fp32"]


def test_dry_plan_names_the_parts_of_the_issue_and_fits_in_eight_minutes(capsys):
    assert gpu_first_contact.main(["--dry"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    parts, total = lines[:-1], lines[-1]
    assert [p["part"] for p in parts] == PARTS
    assert [(p["frames"], p["steps"]) for p in parts] == [([48, 96], 25), ([96], 25), ([96], 25), ([960], 2),
                                                         ([16], 1)]
    assert parts[0]["runs"] == 3
    assert all(p["weights"] == "shared" for p in parts)
    assert all(0 < p["estimate_s"] < p["limit_s"] for p in parts)
    # Every part's limit and the setup together stay within the command's own 8-minute deadline.
    assert total["setup_s"] + sum(p["limit_s"] for p in parts) == total["limits_s"] <= total["deadline_s"] == 480
    assert total["setup_s"] + sum(p["estimate_s"] for p in parts) <= 480


@pytest.mark.slow
def test_smoke_run_reports_every_part_as_it_finishes_on_one_weight_set(comfy_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "COMFYUI_PATH": str(comfy_dir), "OUT": str(out), "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "bench.gpu_first_contact", "--smoke", "--workdir",
                           str(tmp_path / "weights")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    printed = [line for line in done.stdout.splitlines() if line.startswith("{")]
    # The file under $OUT holds exactly what was printed, line by line (written as each part finished).
    assert (out / "gpu_first_contact.jsonl").read_text().splitlines() == printed
    records = {r["part"]: r for r in map(json.loads, printed)}
    assert list(records) == ["setup", *PARTS, "done"]
    for name in PARTS:
        assert "error" not in records[name] and not records[name]["cut_short"], records[name]
    for name in PARTS[:4]:
        assert records[name]["videos"] and all(v["times_s"] and v["s_per_frame"] > 0
                                               for v in records[name]["videos"])
    assert records["c_8gib_card"]["cap_gib"] == 8.0
    compared = records["e_fp16_vs_fp32"]
    assert compared["finite"] and math.isfinite(compared["max_rel"]) and compared["max_rel"] < 1e-2
    assert records["done"]["failed_parts"] == 0
    # One weight set for every part: a part writing its own would leave a second temporal checkpoint behind.
    assert len(list(tmp_path.rglob("temporal_attention.ckpt"))) == 1
