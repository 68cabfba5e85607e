"""``torch.compile`` through core's TorchCompileModel wrapper on the MagicAnimate MODEL, on tiny weights on the CPU.

Every patch is active (motion modules, joint GroupNorm, reference attention, ControlNet residuals) and the video has
several windows and two steps: the UNet forward must compile to ONE graph (no graph break, no recompilation per window
or per step), and the compiled run's latents must equal the eager run's.
"""

from __future__ import annotations

import pytest
import torch
from comfy_api.torch_helpers.torch_compile import set_torch_compile_wrapper

from devtools.random_weights.model_files import TINY
from magicanimate.comfy_adapter.conditioning import apply_conditioning
from magicanimate.comfy_adapter.context import SegmentOptions
from magicanimate.comfy_adapter.payloads import Appearance, PoseCondition
from magicanimate.comfy_adapter.sampling import sample_video
from magicanimate.schedule import ddim_sigmas

H = W = 8


def _run(tiny_models, compile_backend=None, model=None, seed=0):
    """Temporal Sample's conditioning and sampling of a 12-frame video on ``model`` (default: the temporal MODEL;
    ``compile_backend``: compiled through core's wrapper after the conditioning)."""
    temporal, encoder, control = tiny_models
    torch.manual_seed(seed)
    frames = 12
    poses = torch.rand(frames, H * 8, W * 8, 3)
    ref = torch.randn(1, 4, H, W)
    text = [[torch.randn(1, 77, TINY["cross_attention_dim"]), {}]]
    neg = [[torch.randn(1, 77, TINY["cross_attention_dim"]), {}]]
    noise = torch.randn(frames, 4, H, W)
    m, state = apply_conditioning(model or temporal.model, Appearance(encoder, ref), PoseCondition(control, poses, 0.8),
                                  SegmentOptions(8, 2))
    if compile_backend is not None:
        set_torch_compile_wrapper(m, backend=compile_backend, fullgraph=True)
    out = sample_video(m, text, neg, torch.zeros(frames, 4, H, W), noise, 0, 25, 7.5, sigmas=ddim_sigmas(25)[:3])
    return out, state


@pytest.mark.slow
@torch.no_grad()
def test_compiled_unet_is_one_graph_for_every_window_and_step_and_matches_eager(tiny_models, monkeypatch):
    import comfy.ldm.modules.attention as attention
    import torch._dynamo

    # ComfyUI's attention on a CUDA machine (the CPU default, split attention, asks psutil for free memory).
    monkeypatch.setattr(attention, "optimized_attention", attention.attention_pytorch)

    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward   # runs the captured graph as is: what was traced is what runs

    torch._dynamo.reset()
    eager, _ = _run(tiny_models)
    compiled, state = _run(tiny_models, recording_backend)
    # fullgraph=True raises on any graph break; one graph over 2 steps x 2 windows x (cond+uncond) means no guard
    # failed on a counter, a cache dictionary or a per-step tensor.
    assert state.stats["windows"] == 4 and state.stats["encoder_runs"] == 2
    assert len(graphs) == 1, f"{len(graphs)} graphs: recompiled per window or step"
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()


@pytest.mark.slow
@torch.no_grad()
def test_second_prompt_on_a_compiled_model_does_not_recompile(tiny_models, monkeypatch):
    """A graph Load MagicAnimate -> core TorchCompileModel -> Temporal Sample queued twice (other noise, a new
    conditioned clone each time): the graph compiled in the first prompt runs the second one, nothing is traced again.
    """
    import comfy.ldm.modules.attention as attention
    import torch._dynamo

    monkeypatch.setattr(attention, "optimized_attention", attention.attention_pytorch)
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled_model = tiny_models[0].model.clone()  # what TorchCompileModel outputs
    set_torch_compile_wrapper(compiled_model, backend=recording_backend, fullgraph=True)
    first, _ = _run(tiny_models, model=compiled_model, seed=0)
    assert len(graphs) == 1
    second, state = _run(tiny_models, model=compiled_model, seed=1)
    assert state.stats["windows"] == 4
    assert len(graphs) == 1, f"{len(graphs)} graphs: the second prompt recompiled"
    eager, _ = _run(tiny_models, seed=1)
    torch.testing.assert_close(second, eager, atol=1e-5, rtol=1e-5)
    assert (second - first).abs().max() > 1e-3  # the second prompt did sample other noise
    torch._dynamo.reset()


@pytest.mark.slow
@torch.no_grad()
def test_inductor_compiled_tiny_model_matches_eager_on_the_cpu(tiny_models, monkeypatch):
    """The tiny MagicAnimate MODEL compiled by inductor (core TorchCompileModel's default backend; C++ kernels on the
    CPU) in one graph, every patch active: the latents of eager execution up to float32 rounding.

    Inductor fuses and reorders float32 sums; two steps at CFG 7.5 amplify that rounding (measured: at most 6.9e-4
    absolute on latents of magnitude about 2, 17 of 3072 values above 1e-4); a dropped or misplaced patch changes
    the latents by tenths. Compiling takes about 3 minutes on two cores: CI runs it in the oldest ComfyUI's pass."""
    import comfy.ldm.modules.attention as attention
    import torch._dynamo

    monkeypatch.setattr(attention, "optimized_attention", attention.attention_pytorch)
    torch._dynamo.reset()
    eager, _ = _run(tiny_models)
    compiled, state = _run(tiny_models, "inductor")
    assert state.stats["windows"] == 4
    torch.testing.assert_close(compiled, eager, atol=2e-3, rtol=1e-3)
    torch._dynamo.reset()
