"""A MODEL of our own whose module tree shares a user's MODEL weights (for the loader's optional ``model`` input).

``ModelPatcher.clone()`` shares the ``BaseModel`` module tree: clones are only safe because ComfyUI loads one of them
at a time and patches weights in place on that shared tree. The MagicAnimate MODEL adds the motion modules to its
tree (``diffusion_model.motion_modules``), so it must not be a clone of the user's plain SD1.5 MODEL, which would then
carry 0.8-1.6 GB of motion weights into every other sampler that uses it. :func:`private_tree` builds a second tree
whose ``Parameter``/buffer objects are new but view the same storage: no weight is copied, ComfyUI moves and patches
each tree's own objects (``param.data = ...``, ``set_attr_param``), and never writes into the storage itself because
in-place weight updates are switched off for the new MODEL.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable

import comfy.model_management
import comfy.model_patcher
import torch
from comfy.patcher_extension import CallbacksMP

from ..errors import MagicAnimateError
from .keys import SHARED_WEIGHTS_CALLBACK

__all__ = ["private_tree", "unload", "DYNAMIC_STATE"]

#: Attributes a dynamic-VRAM ModelPatcher keeps on the module tree it manages (never shared between two trees).
DYNAMIC_STATE = ("dynamic_vbars", "dynamic_pins", "dynamic_patchers")


def unload(patcher: comfy.model_patcher.ModelPatcher) -> None:
    """Unload every loaded clone of ``patcher`` (as ``free_memory`` does): weights unpatched, on the offload device."""
    loaded = comfy.model_management.current_loaded_models
    for i in range(len(loaded) - 1, -1, -1):
        other = loaded[i].model
        if other is not None and other.model is patcher.model:
            if loaded[i].model_unload():
                loaded.pop(i)


def private_tree(patcher: comfy.model_patcher.ModelPatcher) -> comfy.model_patcher.ModelPatcher:
    """A clone of ``patcher`` (same patches, hooks, options) on a new module tree that shares its weight storage.

    ``patcher`` is unloaded first, so the shared storage holds its unpatched weights on the offload device.
    """
    unload(patcher)
    model = patcher.model
    if getattr(model, "current_weight_patches_uuid", None) is not None or patcher.is_injected or patcher.backup:
        raise MagicAnimateError("Load MagicAnimate: the MODEL input is still patched on a device and could not be "
                                "unloaded; run the prompt again (ComfyUI unloads it between prompts).")
    memo: dict[int, object] = {}
    for p in model.parameters():
        if type(p.data) is not torch.Tensor:  # e.g. a quantized weight class: its own attributes would be lost
            raise MagicAnimateError(f"Load MagicAnimate: the MODEL input stores its weights as "
                                    f"{type(p.data).__name__}; connect an SD1.5 MODEL with ordinary weights (e.g. "
                                    "from CheckpointLoaderSimple).")
        memo[id(p)] = torch.nn.Parameter(p.data, requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = b.detach()
    # The model config is read-only description, shared rather than copied: newer cores give its class a
    # ``__getattr__`` that answers every missing name (``__setstate__`` included) with None, which deepcopy calls.
    config = getattr(model, "model_config", None)
    if config is not None:
        memo[id(config)] = config
    # Dynamic VRAM (newer ComfyUI on NVIDIA cards) keeps per-model loading state on the module tree: address-space
    # reservations, pinned host buffers and the set of patchers using the tree. The new tree starts with its own.
    for name in DYNAMIC_STATE:
        state = getattr(model, name, None)
        if state is not None:
            memo[id(state)] = type(state)()
    try:
        tree = copy.deepcopy(model, memo)
    except Exception as exc:  # an attribute some other node attached that cannot be copied
        raise MagicAnimateError(f"Load MagicAnimate: the MODEL input cannot be shared with the MagicAnimate MODEL "
                                f"({type(exc).__name__}: {exc}); connect the checkpoint loader's MODEL directly."
                                ) from exc
    tree.device = patcher.offload_device
    tree.model_loaded_weight_memory = 0
    tree.lowvram_patch_counter = 0
    tree.model_lowvram = False
    tree.current_weight_patches_uuid = None
    tree.model_offload_buffer_memory = 0
    # A clone's patches, hooks and options on the new tree, with loading state of its own (weight backups, pins).
    fresh: tuple = ({}, {}, {}, set())  # backup, backup_buffers, object_patches_backup, pinned
    if "model_override" in inspect.signature(patcher.clone).parameters:  # newer cores: clone onto another tree
        n = patcher.clone(model_override=(tree, fresh))
    else:
        n = patcher.clone()
        n.model = tree
        n.backup, _, n.object_patches_backup, n.pinned = fresh
    n.parent = None  # not a clone: ComfyUI loads, patches and unloads it as a model of its own
    n.size = 0
    n.weight_inplace_update = False  # an in-place patch would write into the user's MODEL's weights
    n.hook_backup = {}
    n.cached_hook_patches = {}
    n.is_injected = False
    shared = {k: p.data for k, p in model.named_parameters()}
    n.add_callback_with_key(CallbacksMP.ON_DETACH, SHARED_WEIGHTS_CALLBACK, _relink(shared))
    return n


def _relink(shared: dict[str, torch.Tensor]) -> Callable:
    """After a full unload, point the weights back at the shared storage instead of the offload copies.

    Moving a tree to the GPU and back gives it new CPU tensors; unpatched, they equal the shared ones (patches are
    never written into the shared storage), so the copies are dropped and the user's MODEL and ours keep one copy.
    """
    def on_detach(patcher: comfy.model_patcher.ModelPatcher, unpatch_all: bool) -> None:
        if not unpatch_all or patcher.backup or patcher.model.current_weight_patches_uuid is not None:
            return
        with torch.no_grad():
            for key, param in patcher.model.named_parameters():
                src = shared.get(key)
                if (src is not None and param.data_ptr() != src.data_ptr() and param.device == src.device
                        and param.dtype == src.dtype and param.shape == src.shape):
                    param.data = src

    return on_detach
