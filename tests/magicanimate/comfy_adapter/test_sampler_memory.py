"""What Temporal Sample holds per frame, counted exactly: live host storages (``bench.fake_cuda.DeviceMemory`` on
the CPU), not resident memory, so allocator slack cannot hide a copy (docs/ARCHITECTURE.md, "What grows with the
number of frames").

On the streaming path (pose frames from a VIDEO) the sampler's latent-sized video buffers are the only state that
grows with the number of frames. Their peak, in copies of the latent video, is the difference between two lengths.
"""

from __future__ import annotations

import comfy.model_management
import pytest
import torch
from comfy_api.latest import InputImpl
from tiny_models import viridis_frames
from video_probe import write_video

from bench.fake_cuda import DeviceMemory, tracking_allocations
from devtools.pack import pack_nodes
from magicanimate.comfy_adapter.payloads import Appearance
from magicanimate.ram_check import LATENT_COPIES
from magicanimate.windows import padded_length

#: The reference DDIM's buffers at its peak, each a latent video: the initial noise (scaled in place), core's
#: starting x (kept by its sampler for the whole run), the current x, the previous step's denoised prediction and
#: Euler difference (alive while the next step runs the model), the window-fusion sums of the two CFG halves.
REFERENCE_COPIES = LATENT_COPIES  # what Temporal Sample's RAM check counts on before a run
#: Latent 8x8 (1 KiB a frame); 3 and 7 windows. The lengths differ by whole window strides (12 frames), so the peak
#: falls at the same place in the window pattern: the per-frame ControlNet residuals alive at the peak (dropped once
#: the last window holding a frame has run) are then as many in both, and only what grows with the video differs.
SIZE, LENGTHS = 64, (32, 80)


def peak_host_bytes(models, video_path, *, steps: int = 2, **widgets) -> tuple[int, int]:
    """Peak live host bytes allocated while Temporal Sample runs on a VIDEO pose input; and the padded length."""
    temporal, encoder, control = models
    by_id = pack_nodes()
    pose = by_id["MagicAnimatePoseControl"].execute(control, InputImpl.VideoFromFile(str(video_path))).result[0]
    latent = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(0))
    ctx = [[torch.zeros(1, 77, 32), {}]]
    memory = DeviceMemory("cpu")
    with tracking_allocations(memory):
        out = by_id["MagicAnimateTemporalSample"].execute(temporal.model, Appearance(encoder, latent), pose, ctx,
                                                          ctx, seed=1, steps=steps, **widgets).result[0]["samples"]
    assert out.shape[0] == pose.frames.length
    return memory.peak, padded_length(pose.frames.length)


@pytest.fixture(autouse=True)
def fixed_free_memory(monkeypatch):
    """ComfyUI sizes attention chunks and CFG batches by the free memory it reads at each call; on the CPU that is
    whatever the machine has left, which would move the activations' share of the peak from run to run."""
    def get_free_memory(dev=None, torch_free_too: bool = False):
        return (8 * 2**30, 8 * 2**30) if torch_free_too else 8 * 2**30

    monkeypatch.setattr(comfy.model_management, "get_free_memory", get_free_memory)


@pytest.fixture(scope="module")
def videos(tmp_path_factory, tiny_models):
    """The two pose videos, after one untracked warm-up run (what a first run sets up once is not per frame)."""
    folder = tmp_path_factory.mktemp("sampler_memory")
    paths = []
    for n in LENGTHS:
        paths.append(folder / f"pose{n}.mp4")
        write_video(paths[-1], viridis_frames(n, 64, 64, expand=True))
    peak_host_bytes(tiny_models, paths[0], steps=1)
    return paths


def copies_per_frame(tiny_models, videos, **widgets) -> float:
    """Latent-video copies the sampler holds at its peak: the peak's growth per padded frame over one latent frame."""
    (short, short_total), (long, long_total) = (peak_host_bytes(tiny_models, v, **widgets) for v in videos)
    return (long - short) / (long_total - short_total) / (4 * (SIZE // 8) ** 2 * 4)


def test_reference_ddim_holds_seven_latent_copies_per_frame(tiny_models, videos):
    """No all-zero starting latent per frame, no second (scaled) noise, no unused inpainting noise: 7 copies, which
    is 0.46 MB per frame at 512x512 (64 KiB latents), under the long-video goal of 0.5 MB; and exactly what the RAM
    check before a run assumes."""
    assert REFERENCE_COPIES == 7
    copies = copies_per_frame(tiny_models, videos)
    assert REFERENCE_COPIES - 0.05 <= copies <= REFERENCE_COPIES + 0.25, copies


def test_a_core_noise_input_is_scaled_into_a_new_buffer(tiny_models, videos):
    """Noise from a core NOISE node belongs to that node (it may keep it): the reference DDIM's scaling of it goes
    into a new buffer, never in place; only the pack's own noise is scaled in place."""
    handed_out = []

    def draw(shape: torch.Size) -> torch.Tensor:
        return torch.randn(shape, generator=torch.Generator().manual_seed(5))

    class Noise:
        def generate_noise(self, input_latent: dict) -> torch.Tensor:
            handed_out.append(draw(input_latent["samples"].shape))
            return handed_out[-1]

    peak_host_bytes(tiny_models, videos[0], noise=Noise())
    assert len(handed_out) == 1 and torch.equal(handed_out[0], draw(handed_out[0].shape))
