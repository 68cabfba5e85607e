"""``python -m scripts.animate`` end to end on the ComfyUI the suite runs against (``$COMFYUI_PATH`` when set).

The command-line tool drives ComfyUI's own execution internals in-process (``execution.validate_prompt``,
``PromptExecutor`` with a stand-in for the server), which change between ComfyUI versions; the README's quick-start
test runs it on the oldest supported tree only, so this one runs it on the current one too.
"""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


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
