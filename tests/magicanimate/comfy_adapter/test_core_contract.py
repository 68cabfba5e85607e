"""What the pack installs into ComfyUI takes whatever a newer core passes, and forwards it.

Newer cores add arguments to the functions the pack wraps (0.33's ``prepare_sampling`` gained ``force_full_load`` and
``force_offload``; context handlers get more state). Every wrapper and callback on the MagicAnimate MODEL must accept
extra positional and keyword arguments (extra keywords for the UNet's own wrapper, whose positionals are fixed) and
hand them on unchanged.
"""

from __future__ import annotations

import inspect

import torch
from comfy.patcher_extension import WrappersMP

from magicanimate.comfy_adapter.conditioning import apply_conditioning
from magicanimate.comfy_adapter.context import SegmentOptions
from magicanimate.comfy_adapter.keys import WINDOW_MEMORY as OPTION
from magicanimate.comfy_adapter.payloads import Appearance, PoseCondition


def _patched(tiny_models):
    temporal, encoder, control = tiny_models
    ref = torch.zeros(1, 4, 4, 4)
    model, _ = apply_conditioning(temporal.model, Appearance(encoder, ref), PoseCondition(control,
                                  torch.zeros(4, 32, 32, 3)), SegmentOptions())
    return model


def _accepts_extras(fn, keywords_only: bool) -> bool:
    kinds = {p.kind for p in inspect.signature(fn).parameters.values()}
    return inspect.Parameter.VAR_KEYWORD in kinds and (keywords_only or inspect.Parameter.VAR_POSITIONAL in kinds)


def test_every_wrapper_and_callback_of_the_model_takes_extra_arguments(tiny_models):
    model = _patched(tiny_models)
    seen = []
    for kind, by_key in model.wrappers.items():
        for key, wrappers in by_key.items():
            for fn in wrappers:
                seen.append((kind, key))
                assert _accepts_extras(fn, keywords_only=kind == WrappersMP.DIFFUSION_MODEL), (kind, key, fn)
    for kind, by_key in model.callbacks.items():
        for key, callbacks in by_key.items():
            for fn in callbacks:
                seen.append((kind, key))
                assert _accepts_extras(fn, keywords_only=False) or len(inspect.signature(fn).parameters) >= 2, \
                    (kind, key, fn)
    kinds = {kind for kind, _ in seen}
    assert {WrappersMP.PREPARE_SAMPLING, WrappersMP.CALC_COND_BATCH, WrappersMP.PREDICT_NOISE,
            WrappersMP.OUTER_SAMPLE, WrappersMP.DIFFUSION_MODEL} <= kinds, kinds


def test_memory_estimate_wrapper_forwards_what_a_newer_prepare_sampling_passes(tiny_models):
    model = _patched(tiny_models)
    (wrapper,) = model.wrappers[WrappersMP.PREPARE_SAMPLING][OPTION]
    calls = []

    def executor(*args, **kwargs):
        calls.append((args, kwargs, model.model.memory_required([32, 4, 8, 8])))
        return "loaded"

    options = model.model_options
    out = wrapper(executor, model, (32, 4, 8, 8), [], model_options=options, force_full_load=True,
                  force_offload=False)
    assert out == "loaded"
    (args, kwargs, estimate), = calls
    assert args == (model, (32, 4, 8, 8), [])
    assert kwargs == {"model_options": options, "force_full_load": True, "force_offload": False}
    assert estimate > 0 and "memory_required" not in vars(model.model)  # answered inside only
    wrapper(executor, model, (32, 4, 8, 8), [], options, True, False)  # the same, passed by position
    assert calls[-1][0] == (model, (32, 4, 8, 8), [], options, True, False) and calls[-1][2] == estimate
