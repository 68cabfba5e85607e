"""Nothing silently replaced: what core nodes did to the MagicAnimate MODEL is checked when a run starts.

- A model-sampling patch (``ModelSamplingDiscrete`` & co. after Load MagicAnimate) that changes the linear-beta
  schedule: a warning (the user asked for it; the result is no longer the reference's).
- A core context-window option (``Context Windows (Manual)``) on the MODEL: an error for Temporal Sample, which uses
  its own segments and would ignore it; an error for core samplers, where core windows fail deep inside core on a
  MODEL whose frames are the batch.
- The MODEL fed to a core sampler (KSampler, SamplerCustom...): a warning, since it then runs with motion modules only,
  without the appearance and the pose.
- SelfAttentionGuidance with more than one window: an error (it keeps the attention of one UNet call and fails on a
  video denoised window by window).

Warnings go to the log and, during a prompt, to the running node's text in the UI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import comfy.model_patcher
import comfy.model_sampling
import torch
from comfy.patcher_extension import WrappersMP

from ..errors import MagicAnimateError
from .keys import CONDITIONING, CORE_SAMPLER_CHECK, SEGMENT_HANDLER_MARK
from .model_sampling import make_model_sampling

__all__ = ["warn_in_ui", "check_temporal_sample", "install_core_sampler_check", "schedule_replaced",
           "has_self_attention_guidance"]

log = logging.getLogger("MagicAnimate")


def warn_in_ui(message: str) -> None:
    """Log ``message`` and show it as the running node's text in the ComfyUI frontend (during a prompt)."""
    log.warning(message)
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer
    except ImportError:  # outside a ComfyUI server
        return
    context = get_executing_context()
    server = getattr(PromptServer, "instance", None)
    if context is not None and server is not None:
        server.send_progress_text(message, context.node_id)


def schedule_replaced(model: comfy.model_patcher.ModelPatcher) -> tuple[float, float] | None:
    """``(our sigma max, its sigma max)`` when the MODEL's model sampling is no longer MagicAnimate's schedule."""
    ms = model.get_model_object("model_sampling")
    ours = make_model_sampling()
    sigmas = getattr(ms, "sigmas", None)
    if (isinstance(sigmas, torch.Tensor) and sigmas.shape == ours.sigmas.shape
            and isinstance(ms, comfy.model_sampling.EPS) and type(ms).__name__ == type(ours).__name__
            and torch.allclose(sigmas.float().cpu(), ours.sigmas.float(), rtol=1e-4)):
        return None
    theirs = float(sigmas.max()) if isinstance(sigmas, torch.Tensor) else float("nan")
    return float(ours.sigmas.max()), theirs


def _post_cfg_modules(model_options: dict) -> list[str]:
    return [getattr(f, "__module__", "") or "" for f in model_options.get("sampler_post_cfg_function", [])]


def has_self_attention_guidance(model_options: dict) -> bool:
    """True when core's SelfAttentionGuidance node patched the MODEL."""
    return any(m.endswith("nodes_sag") for m in _post_cfg_modules(model_options))


def _context_error(node: str) -> MagicAnimateError:
    if node == "TemporalSample":
        return MagicAnimateError(
            "TemporalSample: a core context-window node (e.g. 'Context Windows (Manual)') is on the MODEL; Temporal "
            "Sample denoises with its own segments and would ignore it. Remove that node and set the segment length "
            "and overlap on MagicAnimate Segment Fuse instead.")
    return MagicAnimateError(
        f"{node}: a core context-window node (e.g. 'Context Windows (Manual)') is on the MagicAnimate MODEL; core "
        "context windows do not work with it (frames are the batch). Remove that node: the MODEL already denoises "
        "16-frame segments, or use MagicAnimate Temporal Sample with Segment Fuse.")


def check_temporal_sample(model: comfy.model_patcher.ModelPatcher, windows: int) -> None:
    """Checks Temporal Sample runs before sampling (``windows``: windows per step). Raises or warns."""
    handler = model.model_options.get("context_handler")
    if handler is not None and not getattr(handler, SEGMENT_HANDLER_MARK, False):
        raise _context_error("TemporalSample")
    if windows > 1 and has_self_attention_guidance(model.model_options):
        raise MagicAnimateError(
            f"TemporalSample: Self-Attention Guidance (SelfAttentionGuidance) is on the MODEL, but this video is "
            f"denoised in {windows} windows per step, and that node keeps the attention of one UNet call only. "
            "Remove Self-Attention Guidance, or animate at most one segment (16 frames by default).")
    replaced = schedule_replaced(model)
    if replaced is not None:
        warn_in_ui(f"TemporalSample: a model-sampling node (e.g. ModelSamplingDiscrete) after Load MagicAnimate "
                   f"replaced MagicAnimate's linear-beta schedule (sigma max {replaced[0]:.2f} -> {replaced[1]:.2f}); "
                   "the video will differ from the reference. Remove that node to get the reference schedule.")


def _core_sampler_wrapper() -> Callable:
    def wrapper(executor, *args, **kwargs):
        guider = executor.class_obj
        patcher = getattr(guider, "model_patcher", None)
        options = getattr(guider, "model_options", None) or {}
        ours = patcher is not None and bool(patcher.get_wrappers(WrappersMP.OUTER_SAMPLE, CONDITIONING))
        if not ours:
            handler = options.get("context_handler")
            if handler is not None and not getattr(handler, SEGMENT_HANDLER_MARK, False):
                raise _context_error("KSampler")
            warn_in_ui("A core sampler (KSampler, SamplerCustom...) is sampling the MagicAnimate MODEL: it runs with "
                       "the motion modules only, without the appearance and the pose. Use MagicAnimate Temporal "
                       "Sample to animate the reference image.")
        return executor(*args, **kwargs)

    return wrapper


def install_core_sampler_check(model: comfy.model_patcher.ModelPatcher) -> None:
    """Warn (or refuse core context windows) when ``model`` is sampled by anything but Temporal Sample (in place)."""
    model.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, CORE_SAMPLER_CHECK, _core_sampler_wrapper())
