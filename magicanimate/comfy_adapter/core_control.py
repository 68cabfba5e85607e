"""ControlNets applied through core nodes (ControlNetApplyAdvanced, chains of them) get each window's hint frames.

Core ``ControlNet.get_control`` fits its hint to the batch with ``broadcast_image_to``, which takes the first frames:
with context windows every window would be steered by hint frames ``0..L-1`` (integration finding B2). The segment
handler instead hands each window a shallow copy of every control in the chain whose ``cond_hint_original`` holds the
window's own frames; core then prepares (resizes, encodes) and runs it as usual. The user's control objects (cached
node outputs) are never modified; the copies live for one model evaluation (one sampler step), are shared by all conds
of a window (so cond and uncond still batch together) and carry the state ``pre_run`` set on the originals.
"""

from __future__ import annotations

import copy

import comfy.controlnet
import torch

__all__ = ["window_hint", "control_for_window", "resize_conds_controls"]


def window_hint(hint: torch.Tensor, index_list: list[int]) -> torch.Tensor:
    """Frames ``index_list`` of a hint ``(T, C, H, W)``; frames past the hint's end repeat its last frame.

    The last-frame padding is what MagicAnimate does to its own pose frames (spec 1.6).
    """
    last = hint.shape[0] - 1
    idx = torch.tensor([min(int(i), last) for i in index_list], dtype=torch.long, device=hint.device)
    return hint.index_select(0, idx)


def _needs_window(control: comfy.controlnet.ControlBase | None) -> bool:
    while control is not None:
        hint = getattr(control, "cond_hint_original", None)
        if isinstance(hint, torch.Tensor) and hint.ndim == 4 and hint.shape[0] > 1:
            return True
        control = getattr(control, "previous_controlnet", None)
    return False


def control_for_window(control: comfy.controlnet.ControlBase, index_list: list[int],
                       cache: dict) -> comfy.controlnet.ControlBase:
    """``control`` (and its ``previous_controlnet`` chain) with per-frame hints cut to the window's frames.

    ``cache`` maps ``(id(control), window)`` to ``(control, copy)`` for one model evaluation. Controls whose hint is a
    single image (or not a tensor) are kept as they are, and a chain that needs no cutting is returned unchanged.
    """
    if not _needs_window(control):
        return control
    key = (id(control), tuple(int(i) for i in index_list))
    hit = cache.get(key)
    if hit is not None and hit[0] is control:
        return hit[1]
    clone = copy.copy(control)
    hint = getattr(control, "cond_hint_original", None)
    if isinstance(hint, torch.Tensor) and hint.ndim == 4 and hint.shape[0] > 1:
        clone.cond_hint_original = window_hint(hint, index_list)
        clone.cond_hint = None  # prepared again from the window's frames by core get_control
    previous = getattr(control, "previous_controlnet", None)
    if previous is not None:
        clone.previous_controlnet = control_for_window(previous, index_list, cache)
    cache[key] = (control, clone)
    return clone


def resize_conds_controls(conds: list[dict] | None, index_list: list[int], cache: dict) -> list[dict] | None:
    """Replace the ``control`` entry of every cond dict by its per-window copy (new dicts; inputs untouched)."""
    if conds is None:
        return None
    out = []
    for cond in conds:
        control = cond.get("control") if isinstance(cond, dict) else None
        if control is not None:
            cond = dict(cond)
            cond["control"] = control_for_window(control, index_list, cache)
        out.append(cond)
    return out
