"""Appearance conditioning: the appearance encoder's per-step reference bank and the reference attention that reads it.

Per model evaluation (one sampler step) the appearance encoder runs once, at batch K (1 to 4 reference images), on
the clean reference latents at the current timestep with the conditional text context, and stops right after its
last captured ``norm1`` (docs/ARCHITECTURE.md, "Denoiser structure"). The K images' tokens of each block are
concatenated along the token axis, so one image is exactly the reference. The 10 mid/up self-attentions of the
denoiser get the reference tokens as extra keys/values for conditional rows only; those keys/values are projected
once per block per step and shared by all frames and windows.

Timesteps reach the encoder in float32, as they reach the UNet (a bf16 961 would be 960).
"""

from __future__ import annotations

from collections.abc import Callable

import comfy.ldm.modules.attention as comfy_attention
import torch
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import forward_timestep_embed, timestep_embedding

from ..reference_attention import REFERENCE_BLOCKS, reference_self_attention
from ..rows import cond_rows
from .conditioning_state import BlockKey, ConditioningState
from .dtypes import compute_dtype

__all__ = ["attn1_modules", "encoder_features", "run_encoder", "project_reference", "refresh_bank", "bank_for_step",
           "bank_for_call", "reference_replace"]


def attn1_modules(diffusion_model: torch.nn.Module) -> dict[BlockKey, torch.nn.Module]:
    """The denoiser's 10 reference self-attentions (``attn1`` of each block in ``REFERENCE_BLOCKS``) by block key."""
    out = {}
    for kind, block, index in REFERENCE_BLOCKS:
        seq = diffusion_model.middle_block if kind == "middle" else diffusion_model.output_blocks[block]
        st = [m for m in seq if isinstance(m, SpatialTransformer)][0]
        out[(kind, block, index)] = st.transformer_blocks[index].attn1
    return out


def _block_key(extra: dict) -> BlockKey:
    """The block key of the attention ComfyUI is running, from its ``extra_options``."""
    return extra["block"][0], extra["block"][1], extra.get("block_index", 0)


def encoder_features(dm: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                     capture: Callable) -> torch.Tensor:
    """Run ComfyUI's UNet ``dm`` up to the ``norm1`` of output block 11's transformer; returns that ``(B, N, C)``.

    ``x``: latents ``(B, 4, h, w)``; ``t``: timesteps ``(B,)``; ``context``: text ``(B, 77, C_text)``. The same layer
    sequence as ``UNetModel._forward`` (its attn1 patch ``capture`` sees the other nine blocks), stopped without an
    exception: the encoder's tail is absent from the file and never run.
    """
    opts: dict = {"patches": {"attn1_patch": [capture]}, "transformer_index": 0}
    emb = dm.time_embed(timestep_embedding(t, dm.model_channels, repeat_only=False).to(x.dtype))
    hs, h = [], x
    for i, module in enumerate(dm.input_blocks):
        opts["block"] = ("input", i)
        h = forward_timestep_embed(module, h, emb, context, opts)
        hs.append(h)
    opts["block"] = ("middle", 0)
    h = forward_timestep_embed(dm.middle_block, h, emb, context, opts)
    last = len(dm.output_blocks) - 1
    for i, module in enumerate(dm.output_blocks[:last]):
        opts["block"] = ("output", i)
        h = torch.cat([h, hs.pop()], dim=1)
        h = forward_timestep_embed(module, h, emb, context, opts, hs[-1].shape)
    h = torch.cat([h, hs.pop()], dim=1)
    res, st = dm.output_blocks[last][0], dm.output_blocks[last][1]
    h = st.proj_in(st.norm(res(h, emb)))
    return st.transformer_blocks[0].norm1(h.movedim(1, 3).flatten(1, 2))


def run_encoder(state: ConditioningState, t: torch.Tensor, context: torch.Tensor) -> None:
    """Fill ``state.bank`` with the encoder's norm1 outputs of the 10 mid/up blocks at timestep ``t`` ``(>= 1,)``.

    Runs on ``t``'s device (the sampling device; the text context ``(>= 1, 77, C)`` may be kept on the CPU by
    ComfyUI) with ``t`` in float32 (the UNet's own timestep dtype). K reference latents run as one batch; each block's
    ``(K, N, C)`` tokens become ``(1, K*N, C)`` (image 0's tokens first), so the denoiser's conditional rows attend to
    every image's tokens.
    """
    enc = state.appearance.encoder.patcher.model
    dm = enc.diffusion_model
    dtype = compute_dtype(enc)
    device = t.device
    latent = enc.process_latent_in(state.appearance.latent.to(device=device, dtype=torch.float32))
    bank: dict = {}
    last = REFERENCE_BLOCKS[-1]

    def capture(n, context_attn1, value_attn1, extra):
        key = _block_key(extra)
        if key in state.attn1:
            bank[key] = n.detach().reshape(1, -1, n.shape[-1])
        return n, context_attn1, value_attn1

    k = latent.shape[0]
    features = encoder_features(dm, latent.to(dtype), t[:1].to(torch.float32).expand(k),
                                context[:1].to(device=device, dtype=dtype).expand(k, -1, -1), capture)
    bank[last] = features.detach().reshape(1, -1, features.shape[-1])
    if len(bank) != len(REFERENCE_BLOCKS):
        raise RuntimeError(f"appearance encoder produced {len(bank)} of {len(REFERENCE_BLOCKS)} reference features")
    state.bank, state.kv = bank, {}
    state.stats["encoder_runs"] += 1


def project_reference(state: ConditioningState, device: torch.device, dtype: torch.dtype) -> None:
    """Reference keys/values ``(1, M, C)`` of every block, once per step, in the UNet's compute dtype."""
    kv = {}
    for key, tokens in state.bank.items():
        attn1 = state.attn1[key]
        tokens = tokens.to(device=device, dtype=dtype)
        kv[key] = (attn1.to_k(tokens), attn1.to_v(tokens))
    state.kv = kv


def refresh_bank(state: ConditioningState, t: torch.Tensor, context: torch.Tensor, device: torch.device,
                 dtype: torch.dtype) -> None:
    """Run the encoder at timestep ``t`` ``(>= 1,)`` with text ``context`` ``(>= 1, 77, C)``, then project the bank's
    keys/values on ``device`` in ``dtype``."""
    run_encoder(state, t, context)
    project_reference(state, device, dtype)


def bank_for_step(state: ConditioningState, model: torch.nn.Module, device: torch.device) -> None:
    """At the start of a model evaluation: the bank for this step's timestep, or an empty one to be filled by the
    first UNet call when the sampler gave no positive text (see :func:`bank_for_call`).

    ``model``: the denoiser's ``BaseModel`` (its compute dtype is the keys/values' dtype).
    """
    if state.cond_context is not None:
        refresh_bank(state, state.step_t, state.cond_context, device, compute_dtype(model))
    else:
        state.bank, state.kv = {}, {}


def bank_for_call(state: ConditioningState, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                  transformer_options: dict) -> None:
    """Inside a UNet call ``x`` ``(chunks * f, 4, h, w)`` whose step has no bank yet (a direct UNet call outside a
    sampler): fill it from the call's timesteps ``(chunks * f,)`` and its first conditional text row of ``context``
    ``(chunks * f, 77, C)`` (row 0 when the call has no conditional chunk)."""
    if state.kv:
        return
    rows = cond_rows(transformer_options.get("cond_or_uncond"), x.shape[0])
    ctx = state.cond_context if state.cond_context is not None else context[rows or slice(0, 1)][:1]
    refresh_bank(state, timesteps, ctx, x.device, x.dtype)


def reference_replace(state: ConditioningState) -> Callable:
    """The attn1 replace of the 10 reference blocks: reference attention for conditional rows while ``state.kv``
    holds the step's keys/values, ComfyUI's optimized self-attention otherwise. q, k, v: ``(B, N, C)``."""
    def attn1_replace(q, k, v, extra):
        ref = state.kv.get(_block_key(extra))
        if ref is None:
            return comfy_attention.optimized_attention(q, k, v, extra["n_heads"],
                                                       attn_precision=extra.get("attn_precision"))
        k_ref, v_ref = ref

        def attention(q_, k_, v_, heads):
            return comfy_attention.optimized_attention(q_, k_, v_, heads, attn_precision=extra.get("attn_precision"))

        return reference_self_attention(q, k, v, k_ref, v_ref, extra["cond_or_uncond"], extra["n_heads"], attention)

    return attn1_replace
