"""Pieces of a fake CUDA device for dry runs under ``FakeTensorMode``: memory accounting of fake storages and
attention as a CUDA card would run it. The accounting (:class:`DeviceMemory`, :func:`tracking_allocations`) also counts
real CPU storages, which is how the tests measure what the sampler holds per frame without allocator noise."""

from __future__ import annotations

import weakref


class DeviceMemory:
    """Live bytes of the storages on one device type (``"cuda"``: fake CUDA storages; ``"cpu"``: real host
    storages), weakref-tracked, with a running peak. Only storages :meth:`track` is shown count (see
    :func:`tracking_allocations`): not weights loaded before, nor arrays made by numpy and wrapped.

    Every storage is tagged with the phase that allocated it (``phase[-1]``: weights, sampler, unet, motion_modules,
    controlnet, appearance_encoder); ``at_peak`` is the live bytes per phase at the moment of the peak.
    """

    def __init__(self, device_type: str = "cuda") -> None:
        self.device_type = device_type
        self.live: dict[int, tuple[int, str]] = {}
        self.current = 0
        self.peak = 0
        self.phase = ["weights"]
        self.by_phase: dict[str, int] = {}
        self.at_peak: dict[str, int] = {}
        self.peak_while: dict[str, int] = {}

    def track(self, t) -> None:
        import torch

        if not isinstance(t, torch.Tensor) or t.device.type != self.device_type:
            return
        st = t.untyped_storage()
        key = st._cdata
        if key in self.live or not st.nbytes():
            return
        size, phase = st.nbytes(), self.phase[-1]
        self.live[key] = (size, phase)
        self.current += size
        self.by_phase[phase] = self.by_phase.get(phase, 0) + size
        if self.current > self.peak:
            self.peak = self.current
            self.at_peak = dict(self.by_phase)
        if len(self.phase) > 2:  # running peak while a network runs (its top-level phase under "sampler")
            top = self.phase[2]
            self.peak_while[top] = max(self.peak_while.get(top, 0), self.current)
        weakref.finalize(st, self._free, key)

    def reset_peak(self) -> None:
        self.peak = self.current
        self.at_peak = dict(self.by_phase)

    def _free(self, key: int) -> None:
        size, phase = self.live.pop(key, (0, ""))
        self.current -= size
        if phase:
            self.by_phase[phase] -= size


def tracking_allocations(memory: DeviceMemory):
    """A dispatch mode that hands every op's tensor outputs to ``memory.track`` (factory functions included), to be
    entered with ``with``; a storage counts from the op that made it until it is freed."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class TrackAllocations(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                memory.track(t)
            return out

    return TrackAllocations()


def flash_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kwargs):
    """``scaled_dot_product_attention`` as a CUDA card runs it: flash kernel for fp16/bf16 (head dim a multiple of 8,
    at most 256, no mask), memory-efficient kernel otherwise; ``(B, heads, L, d)`` in and out."""
    import torch

    d = q.shape[-1]
    if attn_mask is None and q.dtype in (torch.float16, torch.bfloat16) and d % 8 == 0 and d <= 256:
        return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal)[0]
    return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, attn_mask, False, dropout_p, is_causal)[0]
