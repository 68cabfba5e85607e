"""Pose Control fed a VIDEO (core Load Video) instead of an IMAGE batch: the same latents bit for bit, and RAM that
does not grow with the number of pose frames beyond the latents (docs/ARCHITECTURE.md, "Pose frames from a VIDEO")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import comfy.model_management
import comfy.utils
import pytest
import torch
from comfy_api.latest import InputImpl
from tiny_models import viridis_frames
from video_probe import write_video

from devtools.pack import PACK_NAME, load_pack, pack_nodes
from magicanimate.comfy_adapter.payloads import Appearance
from magicanimate.pose_frames import FrameSource

RUNNING = Path(__file__).resolve().parents[2] / "example_inputs" / "running.mp4"


@pytest.fixture(scope="module")
def models(tiny_models):
    temporal, encoder, control = tiny_models
    return temporal.model, encoder, control


def run(models, pose_frames, size: int = 64, steps: int = 1, **kw) -> torch.Tensor:
    """Pose Control on ``pose_frames`` (IMAGE or VIDEO) then Temporal Sample at ``size`` pixels; the latents."""
    by_id = pack_nodes()
    model, encoder, control = models
    fit = kw.pop("fit", "stretch")
    pose = by_id["MagicAnimatePoseControl"].execute(control, pose_frames, fit=fit).result[0]
    latent = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    ctx = [[torch.zeros(1, 77, 32), {}]]
    out = by_id["MagicAnimateTemporalSample"].execute(model, Appearance(encoder, latent), pose, ctx, ctx, seed=1,
                                                      steps=steps, **kw)
    return out.result[0]["samples"]


@pytest.mark.parametrize("name,fit,steps", [("odd", "pad", 2), ("running", "stretch", 1)])
def test_video_and_image_inputs_give_equal_latents(models, tmp_path, name, fit, steps):
    """Load Video -> Pose Control equals Load Video -> Get Video Components -> Pose Control, bit for bit: 37 frames
    of 72x40 (several windows, the closed loop's wrap, edge padding to 48) or the 512x512 example."""
    path = RUNNING
    if name == "odd":
        path = tmp_path / "odd.mp4"
        write_video(path, viridis_frames(37, 40, 72) * 0.9 + torch.rand(37, 40, 72, 3) * 0.1)
    video = InputImpl.VideoFromFile(str(path))
    images = video.get_components().images  # what core Get Video Components hands the IMAGE path
    by_id = pack_nodes()
    pose = by_id["MagicAnimatePoseControl"].execute(models[2], video).result[0]
    assert isinstance(pose.frames, FrameSource) and pose.frames.length == images.shape[0]
    from_video = run(models, video, steps=steps, fit=fit)
    from_image = run(models, images, steps=steps, fit=fit)
    assert from_video.shape == (images.shape[0], 4, 8, 8)
    assert torch.equal(from_video, from_image)


#: Pose frames at 128x128, sampled at 64x64 (latent 8x8), tiny networks, one step; two lengths.
VIDEO_SIZE, SIZE, LENGTHS = 128, 64, (100, 500)
#: RAM per extra frame allowed at 64x64: the sampler's own latent copies (ram_check.LATENT_COPIES of 1 kB, counted
#: exactly by tests/magicanimate/comfy_adapter/test_sampler_memory.py: 7 kB) plus allocator slack, and 4 kB for the
#: pose path, a third of one uint8 frame at the working size. The IMAGE path keeps its fitted frames and hints,
#: 2 x 49 kB a frame.
BOUND_PER_FRAME = 12e3


def peak_growth(comfy_dir: Path, tiny_root: Path, video: Path, kind: str) -> int:
    """Peak RAM growth of one run in a fresh process (tests/pose_memory_probe.py)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # freed tensors go back to the OS at once (glibc)
    done = subprocess.run([sys.executable, "-m", "tests.pose_memory_probe", str(comfy_dir), str(tiny_root),
                           str(video), kind, str(SIZE)], capture_output=True, text=True, env=env, timeout=600,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["frames"] == int(video.stem.removeprefix("pose"))
    return int(result["growth"])


@pytest.mark.slow
def test_ram_per_pose_frame_is_flat_from_a_video(comfy_dir, tiny_files, tmp_path):
    """A few hundred frames: the VIDEO path's peak RAM per extra frame stays under the bound, while the same measure
    of the IMAGE path (handed core's decoded frames) exceeds it, so the measure does see per-frame growth."""
    paths = {n: tmp_path / f"pose{n}.mp4" for n in LENGTHS}
    for n, path in paths.items():
        write_video(path, viridis_frames(n, VIDEO_SIZE, VIDEO_SIZE, expand=True))
    per_frame = {}
    for kind in ("video", "image"):
        peaks = [peak_growth(comfy_dir, tiny_files.root, paths[n], kind) for n in LENGTHS]
        per_frame[kind] = (peaks[1] - peaks[0]) / (LENGTHS[1] - LENGTHS[0])
    print(f"peak RAM per extra pose frame at {SIZE}x{SIZE}: VIDEO {per_frame['video'] / 1e3:.1f} kB, "
          f"IMAGE {per_frame['image'] / 1e3:.1f} kB")
    assert per_frame["video"] < BOUND_PER_FRAME < per_frame["image"], per_frame


def test_an_interrupted_video_run_leaves_no_file_open_and_the_next_run_is_equal(models, tmp_path):
    """An interrupt between windows: the pose video's file is closed and its read-ahead worker idle (state.reset
    closes the hints), and the same Pose Control output then samples as an uninterrupted run does."""
    path = tmp_path / "pose.mp4"
    write_video(path, viridis_frames(40))
    by_id = pack_nodes()
    pose = by_id["MagicAnimatePoseControl"].execute(models[2], InputImpl.VideoFromFile(str(path))).result[0]

    def interrupting(value, total, preview, node_id=None):
        comfy.model_management.interrupt_current_processing(True)
        comfy.model_management.throw_exception_if_processing_interrupted()

    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ctx = [[torch.zeros(1, 77, 32), {}]]

    def sample() -> torch.Tensor:
        node = by_id["MagicAnimateTemporalSample"]
        return node.execute(models[0], Appearance(models[1], latent), pose, ctx, ctx, seed=1, steps=1).result[0]

    load_pack()
    animate = sys.modules[f"{PACK_NAME}.magicanimate.comfy_adapter.animate"]  # the pack as ComfyUI loads it
    comfy.utils.set_progress_bar_global_hook(interrupting)
    with animate.recorded_runs() as runs:
        try:
            with pytest.raises(comfy.model_management.InterruptProcessingException):
                sample()
        finally:
            comfy.utils.set_progress_bar_global_hook(None)
            comfy.model_management.interrupt_current_processing(False)
    assert runs and runs[0].state.hints is None and pose.frames._container is None
    assert not [t for t in threading.enumerate() if t.name.startswith("pose-hints") and t.is_alive()]
    assert torch.equal(sample()["samples"], run(models, InputImpl.VideoFromFile(str(path))))
