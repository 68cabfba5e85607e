"""magicanimate.motion_module: the memory layout a motion module hands to the next layer."""

from __future__ import annotations

import torch

from magicanimate.motion_module import MotionModule


def test_output_keeps_the_input_layout():
    """A contiguous (NCHW) input gives a contiguous output: on a GPU, a channels-last output would make every
    following convolution change layout on each call. A channels-last input stays channels last."""
    torch.manual_seed(0)
    module = MotionModule(32).eval()
    x = torch.randn(2 * 4, 32, 3, 5)
    with torch.no_grad():
        out = module(x, frames=4)
        out_cl = module(x.to(memory_format=torch.channels_last), frames=4)
    assert out.shape == x.shape and out.is_contiguous()
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, out_cl, rtol=1e-5, atol=1e-5)  # GroupNorm kernels differ per layout
