"""Reference ("appearance") attention for the conditional rows only (docs/ARCHITECTURE.md, "Denoiser structure").

In the 10 mid/up transformer blocks, conditional rows attend to their own tokens plus the appearance encoder's
``norm1`` tokens of the same block; unconditional rows get plain self-attention. Keys and values of the reference
tokens are projected once per block per step and broadcast to every frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .rows import chunk_rows

__all__ = ["REFERENCE_BLOCKS", "AttentionFn", "reference_self_attention", "sdpa_attention"]

#: ComfyUI block keys ``(kind, block id, transformer index)`` of the 10 "midup" blocks, in the reference's pairing
#: order (mid, then up_blocks.1..3 = ComfyUI output blocks 3..11).
REFERENCE_BLOCKS: tuple[tuple[str, int, int], ...] = (("middle", 0, 0),) + tuple(("output", i, 0) for i in range(3, 12))

#: ``fn(q, k, v, heads) -> out`` with q ``(B, Lq, heads*d)``, k/v ``(B, Lk, heads*d)``, out ``(B, Lq, heads*d)``.
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Softmax attention ``softmax(q k^T / sqrt(d)) v`` over ``heads`` heads; shapes as :data:`AttentionFn`."""
    b, lq, inner = q.shape
    d = inner // heads
    q_, k_, v_ = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q_, k_, v_)
    return out.transpose(1, 2).reshape(b, lq, inner)


def reference_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_ref: torch.Tensor | None,
                             v_ref: torch.Tensor | None, cond_or_uncond: Sequence[int], heads: int,
                             attention: AttentionFn = sdpa_attention) -> torch.Tensor:
    """Self-attention where conditional rows also attend to reference tokens.

    q, k, v: ``(B, N, C)`` projections of the block's own ``norm1`` tokens; k_ref, v_ref: ``(1, M, C)`` projections of
    the appearance encoder's ``norm1`` tokens (or None: plain self-attention everywhere). Returns ``(B, N, C)``, the
    input of the block's ``to_out``. Cond rows: keys/values ``[own; reference]`` (N + M of them); uncond rows: own only.
    """
    if k_ref is None or v_ref is None:
        return attention(q, k, v, heads)
    outs = []
    for kind, rows in chunk_rows(cond_or_uncond, q.shape[0]):
        qc, kc, vc = q[rows], k[rows], v[rows]
        if kind == 0:
            n = qc.shape[0]
            kc = torch.cat([kc, k_ref.to(kc.dtype).expand(n, -1, -1)], dim=1)
            vc = torch.cat([vc, v_ref.to(vc.dtype).expand(n, -1, -1)], dim=1)
        outs.append(attention(qc, kc, vc, heads))
    return torch.cat(outs, dim=0) if len(outs) > 1 else outs[0]
