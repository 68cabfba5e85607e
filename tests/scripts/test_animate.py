"""``python -m scripts.animate``: its time estimate, its refusal when model files are missing, and a whole run.

* the time estimate is the README's "What to expect" table (measured medians), not a guess;
* it names every missing model file (where it goes, where to download it) and exits 2 before starting ComfyUI;
* end to end on the ComfyUI the suite runs against (``$COMFYUI_PATH`` when set): the tool drives ComfyUI's own
  execution internals in-process (``execution.validate_prompt``, ``PromptExecutor`` with a stand-in for the
  server), which change between ComfyUI versions.
"""

from __future__ import annotations

import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from magicanimate import model_layout as layout
from scripts import animate

REPO = Path(__file__).resolve().parents[2]

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


@pytest.mark.parametrize("workflow", ["basic", "long_video", "txt2img"])
def test_animate_lists_missing_models_and_exits_2(comfy_dir, tmp_path, workflow):
    models = tmp_path / "models"
    models.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.animate", "--workflow", workflow, "--models-dir", str(models),
         "--comfyui", str(comfy_dir), "--output", str(tmp_path / "out.mp4")],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = proc.stdout
    # the animation templates encode prompts with SD1.5's text encoder alone; text-to-image needs the checkpoint
    sd15 = layout.SD15_CHECKPOINT if workflow == "txt2img" else layout.SD15_TEXT_ENCODER
    needed = (sd15, layout.SD_VAE) + layout.MAGICANIMATE_FILES
    assert f"{len(needed)} of {len(needed)}" in out
    for model in needed:
        assert str(models / model.folder / model.name) in out, model.name
        assert all(url in out for url in model.urls), model.name
    fetch = f"To fetch them all: {layout.FETCH_COMMAND} --models-dir {models}"
    assert fetch + (" --with-checkpoint" if workflow == "txt2img" else "") + "\n" in out
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.slow
def test_main_command_writes_the_demo_video_on_this_comfyui(comfy_dir, tmp_path):
    import av
    from server_harness import shared_model_tree

    out = tmp_path / "demo.mp4"
    done = subprocess.run(
        [sys.executable, "-m", "scripts.animate", "--comfyui", str(comfy_dir), "--models-dir",
         str(shared_model_tree()), "--width", "64", "--height", "64", "--steps", "2", "--output", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1800)
    log = f"stdout:\n{done.stdout[-6000:]}\nstderr:\n{done.stderr[-6000:]}"
    assert done.returncode == 0, log
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        fps = stream.average_rate or stream.base_rate or Fraction(0)
        size = (stream.codec_context.width, stream.codec_context.height)
    assert (frames, float(fps), size) == (42, 25.0, (64, 64)), (frames, fps, size, log)

