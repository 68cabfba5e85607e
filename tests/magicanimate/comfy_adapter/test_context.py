"""The segment loop (comfy_adapter/context.py): what it costs per window beyond the model calls.

On a GPU every tensor built from Python data (an index list, the fusion weights) is a host-to-device copy; built per
window per step they stall the stream hundreds of times a run. Consecutive windows are slices and everything else is
built once per run, with the same arithmetic (bit-identical sums).
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from magicanimate.comfy_adapter.context import SegmentHandler, SegmentOptions, SegmentWindow
from magicanimate.comfy_adapter.core_control import window_hint


class _CountFromPython(TorchDispatchMode):
    """Counts tensors made from Python data (``torch.tensor(list)`` dispatches ``aten.lift_fresh``)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.lift_fresh.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _calc_cond_batch(model, conds, x, t, model_options):
    return [x * 2 + t.view(-1, 1, 1, 1) for _ in conds]


def _by_hand(x: torch.Tensor, t: torch.Tensor, options: SegmentOptions) -> torch.Tensor:
    sums, counts = torch.zeros_like(x), torch.zeros(x.shape[0], 1, 1, 1)
    for w in options.windows(x.shape[0]):
        idx = torch.tensor(w)
        weights = torch.tensor([1.0] * len(w)).view(-1, 1, 1, 1)
        sums.index_add_(0, idx, _calc_cond_batch(None, [None], x[idx], t[idx], {})[0] * weights)
        counts.index_add_(0, idx, weights)
    return sums / counts


def test_windows_and_weights_are_built_once_per_run_and_the_sums_are_unchanged():
    options = SegmentOptions(16, 4, closed_loop=True)  # 48 frames: windows 0-15, 12-27, 24-39, 36-47 + 0-3
    handler = SegmentHandler(options)
    x = torch.randn(48, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    t = torch.full((48,), 0.5)
    with _CountFromPython() as first:
        out = handler.execute(_calc_cond_batch, None, [[{}]], x, t, {})
    with _CountFromPython() as second:
        again = handler.execute(_calc_cond_batch, None, [[{}]], x, t, {})
    # Step 1: one index tensor (the wrapping window) and one weight table; step 2: nothing.
    assert (first.count, second.count) == (2, 0)
    assert torch.equal(out[0], again[0]) and torch.equal(out[0], _by_hand(x, t, options))


def test_a_consecutive_window_is_a_copy_of_a_slice_and_a_wrapping_one_indexes():
    full = torch.arange(10.0).view(10, 1)
    straight, wrapping = SegmentWindow([2, 3, 4]), SegmentWindow([8, 9, 0])
    with _CountFromPython() as made:
        part = straight.get_tensor(full)
        straight.add_window(full, torch.ones(3, 1))
    assert made.count == 0 and part.flatten().tolist() == [2.0, 3.0, 4.0]
    assert full.flatten().tolist()[2:5] == [3.0, 4.0, 5.0] and part.flatten().tolist() == [2.0, 3.0, 4.0]  # a copy
    assert wrapping.get_tensor(full).flatten().tolist() == [8.0, 9.0, 0.0]
    with _CountFromPython() as made:
        wrapping.get_tensor(full)
        wrapping.add_window(full, torch.ones(3, 1))
    assert made.count == 0  # its index tensor was built by the first call


def test_core_controlnet_window_hints_are_slices_where_the_frames_follow_each_other():
    hint = torch.arange(6.0).view(6, 1, 1, 1)
    with _CountFromPython() as made:
        assert window_hint(hint, [1, 2, 3]).flatten().tolist() == [1.0, 2.0, 3.0]
        assert window_hint(hint, [4, 5, 6, 7]).flatten().tolist() == [4.0, 5.0, 5.0, 5.0]  # past the end: the last
    assert made.count == 1  # only the padded one indexes
