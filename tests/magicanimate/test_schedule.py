"""The reference DDIM schedule (docs/ARCHITECTURE.md, "Schedule, timesteps and noise scaling")."""

import math

import pytest
import torch

from magicanimate.schedule import alphas_cumprod, ddim_sigmas, ddim_timesteps, linear_betas, pure_noise_scale


def test_25_timesteps_equal_reference_list():
    assert ddim_timesteps(25) == [961, 921, 881, 841, 801, 761, 721, 681, 641, 601, 561, 521, 481, 441, 401, 361,
                                  321, 281, 241, 201, 161, 121, 81, 41, 1]


@pytest.mark.parametrize("steps", [1, 7, 30, 60, 999, 1000])
def test_any_step_count_gives_leading_spacing(steps):
    ts = ddim_timesteps(steps)
    ratio = 1000 // steps
    assert len(ts) == steps and ts[-1] == 1 and all(a - b == ratio for a, b in zip(ts, ts[1:], strict=False))


def test_alpha_bar_values_match_spec():
    ab = alphas_cumprod()
    assert linear_betas()[0].item() == pytest.approx(0.00085) and linear_betas()[-1].item() == pytest.approx(0.012)
    assert ab[961].item() == pytest.approx(0.002478, abs=2e-6)
    assert ab[1].item() == pytest.approx(0.998290, abs=2e-6)
    assert ab[999].item() == pytest.approx(0.001579, abs=2e-6)


def test_sigmas_end_in_zero_and_follow_timesteps():
    sig = ddim_sigmas(25)
    ab = alphas_cumprod()
    assert sig.shape == (26,) and sig[-1] == 0
    assert sig[0].item() == pytest.approx(math.sqrt((1 - ab[961].item()) / ab[961].item()), rel=1e-6)
    half = ddim_sigmas(20, denoise=0.5)
    assert torch.equal(half, ddim_sigmas(20)[10:])


def test_pure_noise_scale_makes_first_input_equal_reference_x_T():
    s0 = float(ddim_sigmas(25)[0])
    noise = torch.randn(8)
    x_sigma = noise * s0 * pure_noise_scale(s0)  # ComfyUI's start in sigma space
    x_t = x_sigma / math.sqrt(1 + s0 * s0)      # what the UNet sees (calculate_input)
    assert torch.allclose(x_t, noise, atol=1e-6)
