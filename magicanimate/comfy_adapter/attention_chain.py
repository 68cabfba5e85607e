"""MagicAnimate's reference attention chained with attention replaces other nodes put on the same blocks.

Core looks an ``attn1`` replace up by ``(block, id, transformer_index)`` first, then ``(block, id)``, and calls one.
Ours sits on the 10 mid/up self-attentions (3-part keys), so a plain ``set_model_attn1_replace`` would hide what
other nodes installed there:

- a replace already on the MODEL when Temporal Sample runs (e.g. SelfAttentionGuidance's recording replace on the
  middle block) keeps running: it gets the whole batch, and its output is kept for the rows where MagicAnimate does
  plain self-attention (unconditional rows); conditional rows get the reference attention;
- rows are told apart by their cond's uuid (positive text or not), not by their place in the call, so an extra pass
  on the negative cond alone (SelfAttentionGuidance's) is not given the reference attention. The labels are worked
  out per model call outside the UNet (an ``APPLY_MODEL`` wrapper) and handed in as plain integers: read inside a
  ``torch.compile``d UNet, the uuids (new in every prompt) would be guarded on, and every prompt would recompile;
- a replace added for one model call only (e.g. PerturbedAttentionGuidance's perturbed pass, which puts a
  ``(block, id)`` replace into the call's ``model_options``) wins over ours for that call, as it would on a plain UNet.
"""

from __future__ import annotations

from collections.abc import Callable

import comfy.model_patcher
import torch
from comfy.patcher_extension import WrappersMP

from ..rows import chunk_rows
from .keys import REFERENCE_ATTENTION, REFERENCE_ATTENTION_MARK, ROW_LABELS

__all__ = ["install_reference_attention"]

Replace = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict], torch.Tensor]


class _PositiveRows:
    """uuids of the positive conds of the run: core numbers rows by their place in the call's cond list, so a pass on
    the negative cond alone (SelfAttentionGuidance's) is labelled 0 ("cond"); the reference attention must not apply
    there."""

    def __init__(self) -> None:
        self.uuids: set | None = None

    def __deepcopy__(self, memo: dict) -> _PositiveRows:
        return self

    def labels(self, extra: dict) -> list[int]:
        """0 (positive text) or 1 per cond chunk of the call; from ``extra[ROW_LABELS]`` where the ``APPLY_MODEL``
        wrapper put them."""
        known = extra.get(ROW_LABELS)
        if known is not None:
            return list(known)
        cu = list(extra.get("cond_or_uncond") or [0])
        uuids = extra.get("uuids")
        if self.uuids and uuids is not None and len(uuids) == len(cu):
            return [0 if u in self.uuids else 1 for u in uuids]
        return cu


def _chained(ours: Replace, before: Replace | None, positive: _PositiveRows) -> Replace:
    """``ours`` for positive-text rows, ``before`` (another node's replace) for the whole batch and the other rows."""
    def replace(q, k, v, extra):
        cu = positive.labels(extra)
        if before is None:
            return ours(q, k, v, {**extra, "cond_or_uncond": cu})
        out = before(q, k, v, extra)
        if 0 not in cu:
            return out
        out = out.clone()
        for kind, rows in chunk_rows(cu, q.shape[0]):
            if kind == 0:
                out[rows] = ours(q[rows], k[rows], v[rows], {**extra, "cond_or_uncond": [0]}).to(out.dtype)
        return out

    setattr(replace, REFERENCE_ATTENTION_MARK, True)
    return replace


def _outer_sample_wrapper(positive: _PositiveRows) -> Callable:
    def wrapper(executor, *args, **kwargs):
        conds = getattr(executor.class_obj, "original_conds", None) or {}
        positive.uuids = {c.get("uuid") for c in conds.get("positive", []) if isinstance(c, dict)} - {None}
        try:
            return executor(*args, **kwargs)
        finally:
            positive.uuids = None

    return wrapper


def _apply_model_wrapper(positive: _PositiveRows) -> Callable:
    """Labels the call's chunks before the UNet runs (outside a compiled UNet: see the module docstring)."""
    def wrapper(executor, *args, **kwargs):
        if len(args) > 5:
            args = (*args[:5], {**args[5], ROW_LABELS: positive.labels(args[5])}, *args[6:])
        elif isinstance(kwargs.get("transformer_options"), dict):
            options = kwargs["transformer_options"]
            kwargs = {**kwargs, "transformer_options": {**options, ROW_LABELS: positive.labels(options)}}
        return executor(*args, **kwargs)

    return wrapper


def _existing(model_options: dict, key: tuple[str, int, int]) -> Replace | None:
    attn1 = model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
    return attn1.get(key, attn1.get(key[:2]))


def _per_call_wrapper(keys: list[tuple[str, int, int]], before: dict) -> Callable:
    def wrapper(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        attn1 = transformer_options.get("patches_replace", {}).get("attn1", {})
        dropped = [key for key in keys if key[:2] in attn1 and attn1[key[:2]] is not before.get(key)
                   and getattr(attn1.get(key), REFERENCE_ATTENTION_MARK, False)]
        if dropped:
            # A (block, id) replace put in for this call only (e.g. PAG's perturbed pass): let it win, as core
            # would on a plain UNet, by removing ours from this call's options.
            attn1 = {k: v for k, v in attn1.items() if k not in dropped}
            transformer_options = {**transformer_options,
                                   "patches_replace": {**transformer_options["patches_replace"], "attn1": attn1}}
        return executor(x, timesteps, context, y, control, transformer_options, **kwargs)

    return wrapper


def install_reference_attention(model: comfy.model_patcher.ModelPatcher, replace: Replace,
                                keys: list[tuple[str, int, int]]) -> dict:
    """Install ``replace`` on the ``(kind, block, index)`` self-attentions of ``model`` (in place; call on a clone).

    Returns ``{key: other node's replace}`` for the blocks where one was chained.
    """
    before = {}
    positive = _PositiveRows()
    for key in keys:
        existing = _existing(model.model_options, key)
        if existing is not None and not getattr(existing, REFERENCE_ATTENTION_MARK, False):
            before[key] = existing
        model.set_model_attn1_replace(_chained(replace, before.get(key), positive), *key)
    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, REFERENCE_ATTENTION, _per_call_wrapper(list(keys), before))
    model.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, REFERENCE_ATTENTION, _outer_sample_wrapper(positive))
    model.add_wrapper_with_key(WrappersMP.APPLY_MODEL, REFERENCE_ATTENTION, _apply_model_wrapper(positive))
    return before
