"""AnimateDiff-v1 style motion modules as used by MagicAnimate.

docs/ARCHITECTURE.md, "Denoiser structure" describes their math and placement; "Motion-module checkpoint keys" their
names and shapes.

A motion module maps per-frame features ``(b*f, C, h, w)`` to themselves plus a temporal transformer's output: each
spatial location attends across the ``f`` frames of its window. Parameter names equal the checkpoint keys
``{down,up}_blocks.{i}.motion_modules.{j}.temporal_transformer.*`` so a state dict loads strictly.

Layers come from an ``operations`` namespace (``torch.nn`` by default; ComfyUI's ``comfy.ops`` classes in the adapter,
so weights can stay on the CPU in low-VRAM mode and are cast per call).
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from .reference_attention import AttentionFn, sdpa_attention

__all__ = ["MAX_POSITIONS", "HEADS", "sinusoidal_positions", "MotionModule", "MotionModuleSet", "motion_module_keys",
           "placements"]

MAX_POSITIONS = 24
HEADS = 8
TORCH_OPS = SimpleNamespace(Linear=nn.Linear, GroupNorm=nn.GroupNorm, LayerNorm=nn.LayerNorm)


def sinusoidal_positions(length: int, channels: int) -> torch.Tensor:
    """Interleaved table ``PE[p, 2i] = sin(p / 10000^(2i/C))``, ``PE[p, 2i+1] = cos(...)``, shape ``(1, length, C)``."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
    pe = torch.zeros(1, length, channels)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe


class _PositionalEncoding(nn.Module):
    def __init__(self, channels: int, max_len: int = MAX_POSITIONS) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_positions(max_len, channels))
        self.cast: torch.Tensor | None = None  # pe on the compute device/dtype (not a buffer: not in state dicts)
        self.cast_from: torch.Tensor | None = None  # the pe tensor ``cast`` was made from

    def table(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``pe`` ``(1, max_len, C)`` on ``device`` in ``dtype``, converted once, kept until either (or ``pe``) changes.

        ``pe`` is replaced, never written, when ComfyUI moves or weight-patches it (e.g. a model merge).
        """
        cast, pe = self.cast, self.pe
        if cast is None or cast.device != device or cast.dtype != dtype or self.cast_from is not pe:
            cast = pe.to(device=device, dtype=dtype)
            self.cast, self.cast_from = cast, pe
        return cast


class TemporalSelfAttention(nn.Module):
    """Self-attention across frames with window-relative sinusoidal positions added to q, k and v inputs."""

    def __init__(self, channels: int, heads: int = HEADS, ops: Any = TORCH_OPS, dtype: torch.dtype | None = None,
                 device: torch.device | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = ops.Linear(channels, channels, bias=False, dtype=dtype, device=device)
        self.to_k = ops.Linear(channels, channels, bias=False, dtype=dtype, device=device)
        self.to_v = ops.Linear(channels, channels, bias=False, dtype=dtype, device=device)
        self.to_out = nn.ModuleList([ops.Linear(channels, channels, dtype=dtype, device=device), nn.Dropout(0.0)])
        self.pos_encoder = _PositionalEncoding(channels)

    def forward(self, x: torch.Tensor, frames: int, attention: AttentionFn) -> torch.Tensor:
        """x: normalised tokens ``(b*f, N, C)`` with batch-major rows; returns ``(b*f, N, C)`` (no residual)."""
        bf, n, c = x.shape
        b = bf // frames
        if frames > self.pos_encoder.pe.shape[1]:
            raise ValueError(f"a window of {frames} frames exceeds the motion module's {self.pos_encoder.pe.shape[1]} "
                             "positions; use a segment length of at most 24")
        # (b*f, N, C) -> (b*N, f, C): one sequence per spatial location, cond/uncond kept apart.
        seq = x.reshape(b, frames, n, c).transpose(1, 2).reshape(b * n, frames, c)
        seq = seq + self.pos_encoder.table(seq.device, seq.dtype)[:, :frames]
        out = attention(self.to_q(seq), self.to_k(seq), self.to_v(seq), self.heads)
        out = self.to_out[0](out)
        return out.reshape(b, n, frames, c).transpose(1, 2).reshape(bf, n, c)


class _GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int, ops: Any, dtype: torch.dtype | None, device: torch.device | None) -> None:
        super().__init__()
        self.proj = ops.Linear(dim, inner * 2, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * nn.functional.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward ``C -> 8C (value | gate) -> 4C -> C``; keys ``net.0.proj``, ``net.2``."""

    def __init__(self, dim: int, mult: int = 4, ops: Any = TORCH_OPS, dtype: torch.dtype | None = None,
                 device: torch.device | None = None) -> None:
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList([_GEGLU(dim, inner, ops, dtype, device), nn.Dropout(0.0),
                                  ops.Linear(inner, dim, dtype=dtype, device=device)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class TemporalTransformerBlock(nn.Module):
    def __init__(self, channels: int, ops: Any, dtype: torch.dtype | None, device: torch.device | None) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalSelfAttention(channels, ops=ops, dtype=dtype, device=device) for _ in range(2)])
        self.norms = nn.ModuleList([ops.LayerNorm(channels, dtype=dtype, device=device) for _ in range(2)])
        self.ff = FeedForward(channels, ops=ops, dtype=dtype, device=device)
        self.ff_norm = ops.LayerNorm(channels, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, frames: int, attention: AttentionFn) -> torch.Tensor:
        for attn, norm in zip(self.attention_blocks, self.norms, strict=True):
            x = attn(norm(x), frames, attention) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer3D(nn.Module):
    def __init__(self, channels: int, ops: Any, dtype: torch.dtype | None, device: torch.device | None) -> None:
        super().__init__()
        self.norm = ops.GroupNorm(32, channels, eps=1e-6, affine=True, dtype=dtype, device=device)
        self.proj_in = ops.Linear(channels, channels, dtype=dtype, device=device)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, ops, dtype, device)])
        self.proj_out = ops.Linear(channels, channels, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, frames: int, attention: AttentionFn) -> torch.Tensor:
        bf, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(bf, h * w, c)  # GroupNorm per frame (4D input)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, frames, attention)
        tokens = self.proj_out(tokens)
        # x first: the sum takes its memory layout, not the permuted (channels-last) one of the tokens.
        return x + tokens.reshape(bf, h, w, c).permute(0, 3, 1, 2)


class MotionModule(nn.Module):
    """One "Vanilla" motion module of width ``channels``: ``x -> x + temporal_transformer(x)``."""

    def __init__(self, channels: int, ops: Any = TORCH_OPS, dtype: torch.dtype | None = None,
                 device: torch.device | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.temporal_transformer = TemporalTransformer3D(channels, ops, dtype, device)

    def forward(self, x: torch.Tensor, frames: int, attention: AttentionFn = sdpa_attention) -> torch.Tensor:
        """x: ``(b*f, C, h, w)`` with batch-major rows (row = chunk * f + frame); returns the same shape."""
        if x.shape[0] % frames:
            raise ValueError(f"batch {x.shape[0]} is not a multiple of {frames} frames")
        return self.temporal_transformer(x, frames, attention)


class _BlockHolder(nn.Module):
    def __init__(self, modules: list[MotionModule]) -> None:
        super().__init__()
        self.motion_modules = nn.ModuleList(modules)


def placements(block_out_channels: tuple[int, ...] | list[int]) -> list[tuple[str, int, int, int]]:
    """The 20 motion modules: ``(side, block, index, width)`` with side ``"down"`` (2 per block) or ``"up"`` (3)."""
    chans = list(block_out_channels)
    out = [("down", d, m, chans[d]) for d in range(len(chans)) for m in range(2)]
    rev = chans[::-1]
    out += [("up", u, m, rev[u]) for u in range(len(chans)) for m in range(3)]
    return out


class MotionModuleSet(nn.Module):
    """All motion modules of the denoiser, named like the checkpoint (``down_blocks.0.motion_modules.0...``)."""

    def __init__(self, block_out_channels: tuple[int, ...] | list[int] = (320, 640, 1280, 1280), ops: Any = TORCH_OPS,
                 dtype: torch.dtype | None = None, device: torch.device | None = None) -> None:
        super().__init__()
        chans = list(block_out_channels)
        self.block_out_channels = tuple(chans)
        self.down_blocks = nn.ModuleList(
            [_BlockHolder([MotionModule(c, ops, dtype, device) for _ in range(2)]) for c in chans])
        self.up_blocks = nn.ModuleList(
            [_BlockHolder([MotionModule(c, ops, dtype, device) for _ in range(3)]) for c in chans[::-1]])

    def prepare_positions(self, device: torch.device, dtype: torch.dtype) -> None:
        """Convert every position table for ``device``/``dtype`` now (eagerly, outside any compiled forward)."""
        for module in self.modules():
            if isinstance(module, _PositionalEncoding):
                module.table(torch.device(device), dtype)

    def module_at(self, side: str, block: int, index: int) -> MotionModule:
        blocks = self.down_blocks if side == "down" else self.up_blocks
        return blocks[block].motion_modules[index]


_MODULE_KEY_SUFFIXES = (
    ["norm.weight", "norm.bias", "proj_in.weight", "proj_in.bias"]
    + [f"transformer_blocks.0.attention_blocks.{a}.{p}" for a in range(2)
       for p in ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight", "to_out.0.bias", "pos_encoder.pe")]
    + [f"transformer_blocks.0.norms.{a}.{p}" for a in range(2) for p in ("weight", "bias")]
    + ["transformer_blocks.0.ff.net.0.proj.weight", "transformer_blocks.0.ff.net.0.proj.bias",
       "transformer_blocks.0.ff.net.2.weight", "transformer_blocks.0.ff.net.2.bias",
       "transformer_blocks.0.ff_norm.weight", "transformer_blocks.0.ff_norm.bias",
       "proj_out.weight", "proj_out.bias"]
)


def motion_module_keys(num_blocks: int = 4) -> list[str]:
    """The checkpoint keys of all motion modules (28 per module, 560 for SD1.5's 4 blocks)."""
    keys = []
    for side, per_block in (("down", 2), ("up", 3)):
        for b in range(num_blocks):
            for m in range(per_block):
                prefix = f"{side}_blocks.{b}.motion_modules.{m}.temporal_transformer."
                keys += [prefix + s for s in _MODULE_KEY_SUFFIXES]
    return keys
