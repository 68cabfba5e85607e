"""The command-line tool's time estimate is the README's "What to expect" table (measured medians), not a guess."""

from __future__ import annotations

import re
from pathlib import Path

from scripts import animate

REPO = Path(__file__).resolve().parents[1]

DEMO_FRAMES, STEPS = 42, 2


def _readme_medians() -> dict[int, float]:
    section = (REPO / "README.md").read_text(encoding="utf-8").split("## What to expect", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+)x\1 \| (\d+) s \|", section, re.M)
    assert len(rows) == 3, "the README's What to expect table lost its 64, 128 and 256 px rows"
    return {int(size): float(seconds) for size, seconds in rows}


def test_estimate_reproduces_the_measured_medians():
    for size, seconds in _readme_medians().items():
        assert round(animate.estimate_cpu_seconds(size, size, STEPS, DEMO_FRAMES)) == seconds, size


def test_estimate_grows_with_size_steps_and_frames_and_matches_the_readmes_512_figure():
    sizes = [32, 64, 96, 128, 192, 256, 384, 512]
    times = [animate.estimate_cpu_seconds(s, s, STEPS, DEMO_FRAMES) for s in sizes]
    assert times == sorted(times) and times[0] == times[1]  # below 64x64 the weights' fixed cost dominates
    assert animate.estimate_cpu_seconds(128, 128, 4, DEMO_FRAMES) == 2 * animate.estimate_cpu_seconds(128, 128, 2, 42)
    hours = animate.estimate_cpu_seconds(512, 512, 25, DEMO_FRAMES) / 3600
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"comes to about {round(hours)} hours" in readme
