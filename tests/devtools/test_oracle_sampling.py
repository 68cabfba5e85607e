"""The oracle's scheduler, context windows and one whole denoising step (TINY size, CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from devtools.oracle import (
    OracleUNet3D,
    oracle_alphas_cumprod,
    oracle_controlnet_residuals,
    oracle_ddim_update,
    oracle_guided_eps,
    oracle_step,
    oracle_timesteps,
    oracle_windows,
)
from devtools.random_weights.model_files import (
    TINY,
    load_oracle_controlnet,
    load_oracle_unet,
    make_unet3d_state_dict,
    write_controlnet,
)

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def tiny_unet() -> OracleUNet3D:
    return load_oracle_unet(make_unet3d_state_dict(TINY, seed=0), TINY)


# ----------------------------------------------------------------------------------------------------------------------
# Scheduler and windows
# ----------------------------------------------------------------------------------------------------------------------


def _diffusers_ddim():
    return diffusers.DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="linear", steps_offset=1, clip_sample=False
    )


def test_timesteps():
    assert oracle_timesteps(25) == list(range(961, 0, -40))
    assert oracle_timesteps(25)[:3] == [961, 921, 881] and oracle_timesteps(25)[-1] == 1
    for steps in (25, 30, 20, 50):
        sched = _diffusers_ddim()
        sched.set_timesteps(steps)
        assert oracle_timesteps(steps) == sched.timesteps.tolist(), steps


def test_alphas_cumprod_and_ddim_update():
    ac = oracle_alphas_cumprod()
    sched = _diffusers_ddim()
    torch.testing.assert_close(ac, sched.alphas_cumprod, rtol=0, atol=0)
    assert ac[961].item() == pytest.approx(0.002478, abs=1e-6)
    assert ac[1].item() == pytest.approx(0.998290, abs=1e-6)
    assert ac[999].item() == pytest.approx(0.001579, abs=1e-6)

    sched.set_timesteps(25)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 3, 8, 8, generator=gen)
    for t in (961, 481, 41, 1):
        eps = torch.randn(1, 4, 3, 8, 8, generator=gen)
        expected = sched.step(eps, t, x, eta=0.0).prev_sample
        torch.testing.assert_close(oracle_ddim_update(x, eps, t, ac, 40), expected, rtol=1e-5, atol=1e-5)
    # The last step returns x0 exactly (alpha_prev = 1).
    eps = torch.randn(1, 4, 3, 8, 8, generator=gen)
    x0 = (x - (1 - ac[1]) ** 0.5 * eps) / ac[1] ** 0.5
    torch.testing.assert_close(oracle_ddim_update(x, eps, 1, ac, 40), x0)


def test_windows_match_spec_table():
    def r(a, b):
        return list(range(a, b + 1))

    assert oracle_windows(16) == [r(0, 15)]
    assert oracle_windows(10) == [r(0, 9)]
    assert oracle_windows(24) == [r(0, 15), r(12, 23) + r(0, 3)]
    assert oracle_windows(24, overlap=0) == [r(0, 15), r(16, 23) + r(0, 7)]
    assert oracle_windows(32) == [r(0, 15), r(12, 27), r(24, 31) + r(0, 7)]
    assert oracle_windows(32, overlap=0) == [r(0, 15), r(16, 31)]
    assert oracle_windows(48) == [r(0, 15), r(12, 27), r(24, 39), r(36, 47) + r(0, 3)]
    w100 = oracle_windows(100)
    assert len(w100) == 9 and w100[-1] == r(96, 99) + r(0, 11)
    assert [w[0] for w in w100] == list(range(0, 100, 12))
    assert len(oracle_windows(100, overlap=0)) == 7 and oracle_windows(100, overlap=0)[-1] == r(96, 99) + r(0, 11)
    for frames, count in [(96, 8), (112, 10), (128, 11)]:
        ws = oracle_windows(frames)
        assert len(ws) == count == math.ceil(frames / 12)
        assert len(oracle_windows(frames, overlap=0)) == frames // 16
    assert oracle_windows(112)[-1] == r(108, 111) + r(0, 11)
    assert oracle_windows(128)[-1] == r(120, 127) + r(0, 7)
    assert oracle_windows(96)[-1] == r(84, 95) + r(0, 3)
    # The reference's open loop still wraps for 32 frames but not for 64
    # (docs/ARCHITECTURE.md, "The uniform context scheduler").
    assert oracle_windows(32, closed_loop=False)[-1] == r(24, 31) + r(0, 7)
    assert all(max(w) - min(w) == 15 for w in oracle_windows(64, closed_loop=False))


# ----------------------------------------------------------------------------------------------------------------------
# One step
# ----------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_oracle_step_windows_and_cfg(tmp_path, tiny_unet):
    write_controlnet(tmp_path / "cn", TINY)
    cn = load_oracle_controlnet(tmp_path / "cn")
    gen = torch.Generator().manual_seed(8)
    num_frames = 6
    x_t = torch.randn(1, 4, num_frames, 8, 8, generator=gen)
    frames = torch.rand(num_frames, 3, 64, 64, generator=gen)
    text = torch.randn(1, 77, 32, generator=gen)
    bank_shapes = [(1, 128)] + [(4, 128)] * 3 + [(16, 64)] * 3 + [(64, 32)] * 3
    bank = {k: torch.randn(s, generator=gen) for k, s in enumerate(bank_shapes)}
    ac = oracle_alphas_cumprod()
    windows = oracle_windows(num_frames, size=4, overlap=2)  # [0..3], [2..5], [4,5,0,1]
    assert windows == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 0, 1]]

    eps = oracle_guided_eps(tiny_unet, bank, cn, frames, x_t, 481, text, text, 7.5, windows)

    # Manual recomputation: every frame covered by exactly two windows here.
    down, mid = oracle_controlnet_residuals(cn, frames, x_t, 481, text)
    acc = torch.zeros(2, 4, num_frames, 8, 8)
    for w in windows:
        idx = torch.tensor(w)
        res = [d[idx].permute(1, 0, 2, 3)[None].repeat(2, 1, 1, 1, 1) for d in down]
        mres = mid[idx].permute(1, 0, 2, 3)[None].repeat(2, 1, 1, 1, 1)
        out = tiny_unet(
            x_t[:, :, idx].repeat(2, 1, 1, 1, 1),
            481,
            text.repeat(2, 1, 1),
            res,
            mres,
            bank,
            torch.tensor([False, True]),
        )
        acc[:, :, idx] += out
    fused = acc / 2
    expected = fused[0:1] + 7.5 * (fused[1:2] - fused[0:1])
    torch.testing.assert_close(eps, expected, rtol=1e-4, atol=1e-4)

    x_prev = oracle_step(tiny_unet, bank, cn, frames, x_t, 481, ac, text, text, 7.5, windows, step_ratio=40)
    torch.testing.assert_close(x_prev, oracle_ddim_update(x_t, eps, 481, ac, 40))
    assert torch.isfinite(x_prev).all()

    # guidance 1 = cond half only.
    eps1 = oracle_guided_eps(tiny_unet, bank, cn, frames, x_t, 481, text, text, 1.0, windows)
    torch.testing.assert_close(eps1, fused[1:2], rtol=1e-4, atol=1e-4)


