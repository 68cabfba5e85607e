"""Constants, helpers and per-frame layers of the oracle 3D UNet (plain torch)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The 10 reference-attention blocks, in bank order k = 0..9 (same order in the appearance encoder and
# in the denoiser).
BANK_BLOCK_NAMES: tuple[str, ...] = (
    "mid_block.attentions.0.transformer_blocks.0",
    "up_blocks.1.attentions.0.transformer_blocks.0",
    "up_blocks.1.attentions.1.transformer_blocks.0",
    "up_blocks.1.attentions.2.transformer_blocks.0",
    "up_blocks.2.attentions.0.transformer_blocks.0",
    "up_blocks.2.attentions.1.transformer_blocks.0",
    "up_blocks.2.attentions.2.transformer_blocks.0",
    "up_blocks.3.attentions.0.transformer_blocks.0",
    "up_blocks.3.attentions.1.transformer_blocks.0",
    "up_blocks.3.attentions.2.transformer_blocks.0",
)

# the 28 state-dict keys of one motion module, after its prefix ``P``.
MOTION_MODULE_KEY_SUFFIXES: tuple[str, ...] = (
    "temporal_transformer.norm.weight",
    "temporal_transformer.norm.bias",
    "temporal_transformer.proj_in.weight",
    "temporal_transformer.proj_in.bias",
    *(
        f"temporal_transformer.transformer_blocks.0.attention_blocks.{a}.{name}"
        for a in (0, 1)
        for name in ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight", "to_out.0.bias", "pos_encoder.pe")
    ),
    *(f"temporal_transformer.transformer_blocks.0.norms.{a}.{p}" for a in (0, 1) for p in ("weight", "bias")),
    "temporal_transformer.transformer_blocks.0.ff.net.0.proj.weight",
    "temporal_transformer.transformer_blocks.0.ff.net.0.proj.bias",
    "temporal_transformer.transformer_blocks.0.ff.net.2.weight",
    "temporal_transformer.transformer_blocks.0.ff.net.2.bias",
    "temporal_transformer.transformer_blocks.0.ff_norm.weight",
    "temporal_transformer.transformer_blocks.0.ff_norm.bias",
    "temporal_transformer.proj_out.weight",
    "temporal_transformer.proj_out.bias",
)
assert len(MOTION_MODULE_KEY_SUFFIXES) == 28

PE_MAX_LEN = 24  # rows of each motion module's positional-encoding table


def motion_module_prefixes(layers_per_block: int = 2) -> list[str]:
    """The 20 motion-module prefixes (8 in the down blocks, 12 in the up blocks)."""
    down = [f"down_blocks.{d}.motion_modules.{m}" for d in range(4) for m in range(layers_per_block)]
    up = [f"up_blocks.{u}.motion_modules.{m}" for u in range(4) for m in range(layers_per_block + 1)]
    return down + up


# ---------------------------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------------------------


def to_frames(x: Tensor) -> Tensor:
    """(b, C, f, h, w) -> (b*f, C, h, w), batch-major (row = batch_index * f + frame)."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def from_frames(x: Tensor, b: int) -> Tensor:
    """(b*f, C, h, w) -> (b, C, f, h, w); inverse of :func:`to_frames`."""
    bf, c, h, w = x.shape
    return x.reshape(b, bf // b, c, h, w).permute(0, 2, 1, 3, 4)


def per_frame(module: nn.Module, x: Tensor) -> Tensor:
    """Apply a 2D module (conv) to every frame of a (b, C, f, h, w) tensor."""
    return from_frames(module(to_frames(x)), x.shape[0])


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """sinusoid of ``dim`` channels laid out as [cos | sin] (flip_sin_to_cos on, freq_shift 0).

    ``t``: (b,) float timesteps. Frequencies ``exp(-ln(10000) * i / (dim/2))``, i = 0..dim/2-1. Returns (b, dim).
    """
    half = dim // 2
    i = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(10000.0) * i / half)
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def sinusoidal_position_table(max_len: int, channels: int) -> Tensor:
    """``PE[p, 2i] = sin(p * 10000^(-2i/C))``, ``PE[p, 2i+1] = cos(...)``. Returns (1, max_len, C)."""
    p = torch.arange(max_len, dtype=torch.float64)[:, None]  # positions 0..max_len-1
    i = torch.arange(channels // 2, dtype=torch.float64)[None, :]
    angle = p * 10000.0 ** (-2.0 * i / channels)  # computed in float64, stored as float32
    pe = torch.zeros(1, max_len, channels, dtype=torch.float64)
    pe[0, :, 0::2] = torch.sin(angle)  # even channels: sin
    pe[0, :, 1::2] = torch.cos(angle)  # odd channels: cos (interleaved, not concatenated)
    return pe.float()


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Plain multi-head attention ``softmax(Q K^T / sqrt(d)) V``; q (B, Nq, C), k/v (B, Nk, C) -> (B, Nq, C)."""
    bsz, nq, c = q.shape
    nk = k.shape[1]
    d = c // heads
    q = q.reshape(bsz, nq, heads, d).transpose(1, 2)  # (B, heads, Nq, d)
    k = k.reshape(bsz, nk, heads, d).transpose(1, 2)
    v = v.reshape(bsz, nk, heads, d).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)
    weights = torch.softmax(scores, dim=-1)
    out = torch.matmul(weights, v)  # (B, heads, Nq, d)
    return out.transpose(1, 2).reshape(bsz, nq, c)


# ---------------------------------------------------------------------------------------------------------------------
# Layers (parameter names follow diffusers / MagicAnimate)
# ---------------------------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Attention with q/k/v without bias and an output Linear with bias (``to_out.0``)."""

    def __init__(self, dim: int, context_dim: int | None, heads: int) -> None:
        super().__init__()
        kv_dim = dim if context_dim is None else context_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(kv_dim, dim, bias=False)
        self.to_v = nn.Linear(kv_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """x (B, Nq, C) queries; context (B, Nk, C_ctx) keys/values source. Returns (B, Nq, C)."""
        out = softmax_attention(self.to_q(x), self.to_k(context), self.to_v(context), self.heads)
        return self.to_out[0](out)


class GEGLU(nn.Module):
    """Linear C -> 8C; value = first 4C, gate = last 4C; returns value * GELU_erf(gate). (GEGLU)."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)  # exact (erf) GELU


class FeedForward(nn.Module):
    """``net.0`` = GEGLU (C -> 4C), ``net.1`` = dropout p=0 (identity), ``net.2`` = Linear 4C -> C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, 4 * dim), nn.Identity(), nn.Linear(4 * dim, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class ResnetBlock(nn.Module):
    """ResnetBlock3D. GroupNorms (32 groups, eps 1e-5) are applied to the 5D tensor, i.e. jointly over all
    frames of a batch element; convs are per frame."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(32, c_in, eps=1e-5)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_dim, c_out)
        self.norm2 = nn.GroupNorm(32, c_out, eps=1e-5)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        """x (b, C_in, f, h, w), temb (b, temb_dim) -> (b, C_out, f, h, w)."""
        h = per_frame(self.conv1, F.silu(self.norm1(x)))  # nn.GroupNorm on 5D = joint over frames
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
        h = per_frame(self.conv2, F.silu(self.norm2(h)))
        shortcut = x if self.conv_shortcut is None else per_frame(self.conv_shortcut, x)
        return shortcut + h


class BasicTransformerBlock(nn.Module):
    """The spatial transformer block, with the reference-attention read when a bank tensor is given."""

    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn1 = Attention(dim, None, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.attn2 = Attention(dim, context_dim, heads)
        self.norm3 = nn.LayerNorm(dim, eps=1e-5)
        self.ff = FeedForward(dim)

    def forward(self, x: Tensor, text: Tensor, bank: Tensor | None, ref_rows: Tensor | None) -> Tensor:
        """x (R, N, C) tokens (R = b*f rows); text (R, 77, ctx); bank (N_ref, C) or None; ref_rows (R,) bool."""
        n = self.norm1(x)
        plain = self.attn1(n, n)
        if bank is None:
            x = x + plain
        else:
            # cond rows attend to [own normalised tokens, bank tokens] (2N keys), with the denoiser's
            # own projections; the bank is already normalised (appearance encoder's norm1) and is not re-normalised.
            kv = torch.cat([n, bank.to(n.dtype)[None].expand(n.shape[0], -1, -1)], dim=1)
            with_ref = self.attn1(n, kv)
            assert ref_rows is not None
            x = x + torch.where(ref_rows[:, None, None], with_ref, plain)
        x = x + self.attn2(self.norm2(x), text)
        x = x + self.ff(self.norm3(x))
        return x


class SpatialTransformer(nn.Module):
    """GroupNorm(32, eps 1e-6) -> 1x1 conv proj_in -> tokens -> block ->
    1x1 conv proj_out -> + residual. Diffusers name: ``Transformer2DModel`` with ``use_linear_projection=False``."""

    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(32, dim, eps=1e-6)
        self.proj_in = nn.Conv2d(dim, dim, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(dim, context_dim, heads)])
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor, text: Tensor, bank: Tensor | None, ref_rows: Tensor | None) -> Tensor:
        """x (b, C, f, h, w); text (b, 77, ctx); bank (N_ref, C) or None; ref_rows (b,) bool. Returns x's shape."""
        b, c, f, h, w = x.shape
        frames = to_frames(x)  # (b*f, C, h, w), per-frame GroupNorm below
        residual = frames
        y = self.proj_in(self.norm(frames))
        tokens = y.permute(0, 2, 3, 1).reshape(b * f, h * w, c)
        text_rows = text.repeat_interleave(f, dim=0)  # batch-major, same order as the frames
        row_mask = None if ref_rows is None else ref_rows.repeat_interleave(f, dim=0)
        tokens = self.transformer_blocks[0](tokens, text_rows, bank, row_mask)
        y = tokens.reshape(b * f, h, w, c).permute(0, 3, 1, 2)
        return from_frames(self.proj_out(y) + residual, b)
