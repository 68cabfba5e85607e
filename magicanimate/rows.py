"""Rows of a batched model call that belong to each classifier-free-guidance chunk.

ComfyUI evaluates the conditional and unconditional halves of a window in one UNet call when memory allows: the batch
is ``(chunks * f, ...)``, equal-sized chunks concatenated in ``cond_or_uncond`` order (0 = cond, 1 = uncond). The
order itself is never assumed. A call that carries no ``cond_or_uncond`` (a direct UNet call) is one cond chunk.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["chunk_rows", "chunk_length", "cond_rows"]


def chunk_rows(cond_or_uncond: Sequence[int] | None, batch: int) -> list[tuple[int, slice]]:
    """Split a batch of ``batch`` rows into its chunks: ``[(0 for cond | 1 for uncond, rows), ...]`` in batch order.

    ``cond_or_uncond`` ``None`` or empty means one cond chunk. Raises ``ValueError`` when ``batch`` is not a multiple
    of the number of chunks.
    """
    labels = list(cond_or_uncond or [0])
    n = len(labels)
    if batch % n:
        raise ValueError(f"batch {batch} is not a multiple of the {n} cond/uncond chunks")
    f = batch // n
    return [(int(c), slice(i * f, (i + 1) * f)) for i, c in enumerate(labels)]


def chunk_length(cond_or_uncond: Sequence[int] | None, batch: int) -> int:
    """Rows per chunk (the window's frame count ``f`` when frames are the batch)."""
    return chunk_rows(cond_or_uncond, batch)[0][1].stop


def cond_rows(cond_or_uncond: Sequence[int] | None, batch: int) -> slice | None:
    """Rows of the first conditional chunk, or ``None`` when the call has none (an unconditional pass)."""
    return next((rows for kind, rows in chunk_rows(cond_or_uncond, batch) if kind == 0), None)
