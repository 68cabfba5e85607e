"""Reference attention math against a plain per-row loop."""

import torch

from magicanimate.reference_attention import reference_self_attention
from magicanimate.rows import chunk_rows


def plain(q, k, v, heads):
    b, n, c = q.shape
    d = c // heads
    qh, kh, vh = (t.reshape(t.shape[0], t.shape[1], heads, d).permute(0, 2, 1, 3) for t in (q, k, v))
    w = torch.softmax(qh @ kh.transpose(-1, -2) / d ** 0.5, dim=-1)
    return (w @ vh).permute(0, 2, 1, 3).reshape(b, n, c)


def test_cond_rows_see_reference_uncond_rows_do_not_in_any_chunk_order():
    torch.manual_seed(0)
    f, n, m, c, heads = 3, 5, 7, 16, 4
    q, k, v = (torch.randn(2 * f, n, c) for _ in range(3))
    k_ref, v_ref = torch.randn(1, m, c), torch.randn(1, m, c)
    for order in ([1, 0], [0, 1]):
        out = reference_self_attention(q, k, v, k_ref, v_ref, order, heads)
        for chunk, rows in chunk_rows(order, 2 * f):
            for r in range(rows.start, rows.stop):
                if chunk == 0:
                    kk = torch.cat([k[r:r + 1], k_ref], 1)
                    vv = torch.cat([v[r:r + 1], v_ref], 1)
                else:
                    kk, vv = k[r:r + 1], v[r:r + 1]
                expect = plain(q[r:r + 1], kk, vv, heads)
                torch.testing.assert_close(out[r:r + 1], expect, atol=1e-5, rtol=1e-5)
    uncond_only = reference_self_attention(q[:f], k[:f], v[:f], k_ref, v_ref, [1], heads)
    torch.testing.assert_close(uncond_only, plain(q[:f], k[:f], v[:f], heads), atol=1e-5, rtol=1e-5)
