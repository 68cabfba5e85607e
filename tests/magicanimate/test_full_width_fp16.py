"""Full-width (SD1.5's 1280 channels) motion modules and reference attention in fp16, as a GPU runs them.

The tiny-model half-precision tests use 32-128 channels; overflow in fp16 (max 65504) shows at full width first: the
temporal attention's logits and the 4x-wide feed-forward grow with the width. Activations of the magnitude SD1.5's
deepest blocks carry (tens, with outliers in the hundreds and thousands) must give finite outputs close to float32.
"""

from __future__ import annotations

import pytest
import torch

from magicanimate.motion_module import MotionModule
from magicanimate.reference_attention import reference_self_attention

FRAMES = 16


@pytest.mark.parametrize("scale", [30.0, 300.0, 3000.0])
def test_full_width_motion_module_in_fp16_is_finite_and_close_to_float32(scale):
    torch.manual_seed(0)
    full = MotionModule(1280).eval()
    half = MotionModule(1280, dtype=torch.float16).eval()
    half.load_state_dict(full.state_dict())
    x = torch.randn(2 * FRAMES, 1280, 4, 4) * scale
    with torch.no_grad():
        expected = full(x, frames=FRAMES)
        got = half(x.half(), frames=FRAMES)
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    assert (got.float() - expected).abs().max() <= 3e-3 * expected.abs().max()  # measured about 6e-4


@pytest.mark.parametrize("scale", [1.0, 4.0, 30.0])
def test_full_width_reference_attention_in_fp16_is_finite_and_close_to_float32(scale):
    """Cond rows attend to their own 32x32 tokens plus a photo's; q/k/v of magnitude ``scale`` (projections of
    LayerNorm outputs are of order 1). At 30 the logits reach about 1e3 and fp16's spacing there (0.5) decides the
    softmax's winner, so only finiteness is required."""
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 1024, 1280, generator=gen) * scale for _ in range(3))
    k_ref, v_ref = (torch.randn(1, 1024, 1280, generator=gen) * scale for _ in range(2))
    expected = reference_self_attention(q, k, v, k_ref, v_ref, [1, 0], heads=8)
    got = reference_self_attention(q.half(), k.half(), v.half(), k_ref.half(), v_ref.half(), [1, 0], heads=8)
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    if scale <= 4:
        assert (got.float() - expected).abs().max() <= 2e-2 * expected.abs().max()
