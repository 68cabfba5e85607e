"""What would fail or waste on a GPU, checked on the CPU: joint GroupNorm without transposed copies, position tables
converted once, window residuals built once, float32 timesteps for the encoder and the ControlNet."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from magicanimate.comfy_adapter.pose_residuals import _runs, _take, residuals_for_batch
from magicanimate.comfy_adapter.temporal import joint_group_norm
from magicanimate.motion_module import MotionModuleSet


def reference_joint_norm(norm: torch.nn.GroupNorm, x: torch.Tensor, f: int) -> torch.Tensor:
    """The reference: GroupNorm of the 5D ``(chunks, C, f, h, w)`` tensor (float32 statistics in PyTorch's kernel)."""
    b, c, h, w = x.shape
    x5 = x.view(b // f, f, c, h, w).transpose(1, 2)
    return F.group_norm(x5, norm.num_groups, norm.weight, norm.bias, norm.eps).transpose(1, 2).reshape(b, c, h, w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@torch.no_grad()
def test_joint_group_norm_matches_the_5d_group_norm(dtype):
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(32, 64, eps=1e-5)
    norm.weight.normal_(1.0, 0.2)
    norm.bias.normal_(0.0, 0.2)
    x = torch.randn(2 * 6, 64, 5, 7) * 3 + 1.5   # a mean well off zero: the shift is not trivial
    got = joint_group_norm(norm.to(dtype), x.to(dtype), 6)
    assert got.dtype == dtype and got.is_contiguous()
    if dtype == torch.float32:  # the same sums in another order
        torch.testing.assert_close(got, reference_joint_norm(norm, x, 6), atol=1e-6, rtol=1e-6)
        return
    # Half: PyTorch's own GroupNorm kernel in that dtype is the bar. Against the exact result on the rounded input,
    # ours is no worse than the kernel, and the two differ by at most one unit in the last place of the output.
    kernel = reference_joint_norm(norm, x.to(dtype), 6).float()
    exact = reference_joint_norm(norm.float(), x.to(dtype).float(), 6)
    err_ours, err_kernel = (got.float() - exact).abs().max(), (kernel - exact).abs().max()
    assert err_ours <= err_kernel * 1.001, (err_ours, err_kernel)
    ulp = 2.0 ** torch.floor(torch.log2(exact.abs().max())) * torch.finfo(dtype).eps
    assert (got.float() - kernel).abs().max() <= ulp


def test_position_tables_are_converted_once_per_device_and_dtype():
    mm = MotionModuleSet((32, 64, 128, 128))
    attn = mm.module_at("down", 0, 0).temporal_transformer.transformer_blocks[0].attention_blocks[0]
    mm.prepare_positions(torch.device("cpu"), torch.float16)
    first = attn.pos_encoder.cast
    assert first.dtype == torch.float16 and torch.equal(first.float(), attn.pos_encoder.pe.half().float())
    assert attn.pos_encoder.table(torch.device("cpu"), torch.float16) is first      # reused, no conversion
    assert attn.pos_encoder.table(torch.device("cpu"), torch.float32) is not first  # another dtype: converted
    assert "pos_encoder.cast" not in "".join(mm.state_dict())                       # never a checkpoint key


def test_window_slices_and_residuals_need_no_index_tensor_and_no_repeat():
    assert _runs([4, 5, 6, 0, 1]) == [(4, 7), (0, 2)]
    t = torch.arange(8)
    assert torch.equal(_take(t, _runs([4, 5, 6, 0, 1])), torch.tensor([4, 5, 6, 0, 1]))
    assert _take(t, [(2, 5)]).data_ptr() == t[2:5].data_ptr()  # one run: a view, no copy

    frames = [torch.randn(1, 2, 4, 4) for _ in range(3)]

    class _S:
        window_control = {"output": [frames], "middle": [[f[:, :, :2, :2].clone() for f in frames]]}

    one = residuals_for_batch(_S, 1)
    assert torch.equal(one["output"][0], torch.cat(frames))      # one concatenation of the cached frames
    two = residuals_for_batch(_S, 2)
    assert torch.equal(two["middle"][0], torch.cat(_S.window_control["middle"][0] * 2))

    class _One:
        window_control = {"output": [frames[:1]], "middle": [frames[1:2]]}

    assert residuals_for_batch(_One, 1)["output"][0] is frames[0]   # one frame, one chunk: the cached tensor itself
