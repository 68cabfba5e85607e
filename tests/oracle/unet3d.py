"""Independent reference ("oracle") implementation of MagicAnimate inference, for tests only.

Everything here is written directly from ``/work/shared/spec/magicanimate-reference.md`` ("the spec"), in plain torch,
without importing the project's ``magicanimate`` package or ComfyUI. diffusers is used only where the spec says the
reference *is* diffusers (the 2D appearance encoder, the ControlNet); the 3D denoiser is written out by hand.

The code favours readability over speed: every attention is an explicit ``softmax(Q K^T / sqrt(d)) V``, reference
attention computes both the plain and the reference result for every row and then selects, and so on. It is meant to be
run on tiny random-weight models on CPU, in fp32.

Shape conventions: ``b`` batch (CFG halves), ``f`` frames, ``C`` channels, ``h, w`` latent size, ``N = h*w`` tokens.
Video tensors are ``(b, C, f, h, w)``; "per frame" operations fold them batch-major to ``(b*f, C, h, w)``
(row = batch_index * f + frame), as in spec §2.2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BANK_BLOCK_NAMES",
    "MOTION_MODULE_KEY_SUFFIXES",
    "OracleAppearanceEncoder",
    "OracleUNet3D",
    "motion_module_prefixes",
    "oracle_alphas_cumprod",
    "oracle_controlnet_residuals",
    "oracle_ddim_update",
    "oracle_guided_eps",
    "oracle_step",
    "oracle_timesteps",
    "oracle_windows",
    "sinusoidal_position_table",
    "timestep_embedding",
]

# Spec §4 table: the 10 reference-attention blocks, in bank order k = 0..9 (same order in the appearance encoder and
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

# Spec §3.3: the 28 state-dict keys of one motion module, after its prefix ``P``.
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

PE_MAX_LEN = 24  # spec §2.3 item 4


def motion_module_prefixes(layers_per_block: int = 2) -> list[str]:
    """The 20 motion-module prefixes of spec §2.3 item 6 (8 in the down blocks, 12 in the up blocks)."""
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
    """Spec §2.2: sinusoid of ``dim`` channels laid out as [cos | sin] (flip_sin_to_cos on, freq_shift 0).

    ``t``: (b,) float timesteps. Frequencies ``exp(-ln(10000) * i / (dim/2))``, i = 0..dim/2-1. Returns (b, dim).
    """
    half = dim // 2
    i = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(10000.0) * i / half)
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def sinusoidal_position_table(max_len: int, channels: int) -> Tensor:
    """Spec §2.3 item 4: ``PE[p, 2i] = sin(p * 10000^(-2i/C))``, ``PE[p, 2i+1] = cos(...)``. Returns (1, max_len, C)."""
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
# Layers (parameter names follow diffusers / MagicAnimate, spec §3.3)
# ---------------------------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Attention with q/k/v without bias and an output Linear with bias (``to_out.0``). Spec §2.2 "Attention"."""

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
    """Linear C -> 8C; value = first 4C, gate = last 4C; returns value * GELU_erf(gate). Spec §2.2 "FF (GEGLU)"."""

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
    """Spec §2.2 "ResnetBlock3D". GroupNorms (32 groups, eps 1e-5) are applied to the 5D tensor, i.e. jointly over all
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
    """Spec §2.2 transformer block, with the reference-attention read of spec §4 when a bank tensor is given."""

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
            # Spec §4 "Read": cond rows attend to [own normalised tokens, bank tokens] (2N keys), with the denoiser's
            # own projections; the bank is already normalised (appearance encoder's norm1) and is not re-normalised.
            kv = torch.cat([n, bank.to(n.dtype)[None].expand(n.shape[0], -1, -1)], dim=1)
            with_ref = self.attn1(n, kv)
            assert ref_rows is not None
            x = x + torch.where(ref_rows[:, None, None], with_ref, plain)
        x = x + self.attn2(self.norm2(x), text)
        x = x + self.ff(self.norm3(x))
        return x


class SpatialTransformer(nn.Module):
    """Spec §2.2 "Spatial transformer (per frame)": GroupNorm(32, eps 1e-6) -> 1x1 conv proj_in -> tokens -> block ->
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


class PositionalEncoding(nn.Module):
    """Holds the persistent buffer ``pe`` (1, 24, C) of spec §2.3 item 4."""

    def __init__(self, dim: int, max_len: int = PE_MAX_LEN) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_position_table(max_len, dim), persistent=True)


class TemporalAttention(Attention):
    """Spec §2.3 "Temporal_Self": attention over the f frames of each spatial location, PE added to the (normalised)
    input so it enters q, k and v but not the residual."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__(dim, None, heads)
        self.pos_encoder = PositionalEncoding(dim)

    def forward_video(self, x: Tensor, frames: int) -> Tensor:
        """x (b*f, N, C) normalised tokens -> (b*f, N, C) attention output (no residual)."""
        bf, n, c = x.shape
        b = bf // frames
        seq = x.reshape(b, frames, n, c).permute(0, 2, 1, 3).reshape(b * n, frames, c)  # (b*N, f, C)
        seq = seq + self.pe_for(frames)
        out = self.forward(seq, seq)
        return out.reshape(b, n, frames, c).permute(0, 2, 1, 3).reshape(bf, n, c)

    def pe_for(self, frames: int) -> Tensor:
        """Window-relative positions 0..f-1: (1, f, C)."""
        return self.pos_encoder.pe[:, :frames]


class TemporalTransformerBlock(nn.Module):
    """Spec §2.3 item 2: two Temporal_Self sub-layers (each ``x += TA(LN(x))``), then ``x += FF(ff_norm(x))``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalAttention(dim, heads) for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim, eps=1e-5) for _ in range(2)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            x = x + attention.forward_video(norm(x), frames)
        return x + self.ff(self.ff_norm(x))


class TemporalTransformer(nn.Module):
    """Spec §2.3 items 1-3: GN(32, eps 1e-6, per frame) -> Linear proj_in -> block -> Linear proj_out -> + input."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(32, dim, eps=1e-6)
        self.proj_in = nn.Linear(dim, dim)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(dim, heads)])
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x (b, C, f, h, w) -> same shape."""
        b, c, f, h, w = x.shape
        frames = to_frames(x)
        residual = frames
        tokens = self.norm(frames).permute(0, 2, 3, 1).reshape(b * f, h * w, c)
        tokens = self.proj_in(tokens)
        tokens = self.transformer_blocks[0](tokens, f)
        tokens = self.proj_out(tokens)
        y = tokens.reshape(b * f, h, w, c).permute(0, 3, 1, 2)
        return from_frames(y + residual, b)


class MotionModule(nn.Module):
    """AnimateDiff-v1 "Vanilla" motion module: a wrapper named ``temporal_transformer`` (spec §3.3 key names)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(dim, heads)

    def forward(self, x: Tensor) -> Tensor:
        return self.temporal_transformer(x)


class Downsample(nn.Module):
    """3x3 conv, stride 2, padding 1, per frame."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return per_frame(self.conv, x)


class Upsample(nn.Module):
    """Nearest x2 in H and W only (x1 in time), then a 3x3 conv, per frame."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        frames = F.interpolate(to_frames(x), scale_factor=2.0, mode="nearest")
        return from_frames(self.conv(frames), x.shape[0])


class UNetBlock(nn.Module):
    """A down or up block: ``resnets``, optional ``attentions``, ``motion_modules``, optional down/up sampler.

    Submodules are created in the order the diffusers blocks create them (the key *set* is what matters)."""

    def __init__(
        self,
        resnet_io: Sequence[tuple[int, int]],
        with_attention: bool,
        temb_dim: int,
        context_dim: int,
        heads: int,
        sampler: str | None,
    ) -> None:
        super().__init__()
        c_out = resnet_io[0][1]
        if with_attention:
            self.attentions = nn.ModuleList([SpatialTransformer(c_out, context_dim, heads) for _ in resnet_io])
        else:
            self.attentions = None
        self.resnets = nn.ModuleList([ResnetBlock(ci, co, temb_dim) for ci, co in resnet_io])
        if sampler == "down":
            self.downsamplers = nn.ModuleList([Downsample(c_out)])
        elif sampler == "up":
            self.upsamplers = nn.ModuleList([Upsample(c_out)])
        self.motion_modules = nn.ModuleList([MotionModule(c_out, heads) for _ in resnet_io])


class MidBlock(nn.Module):
    """Spec §2.2 mid block: resnet, spatial transformer (bank k = 0), resnet; no motion module."""

    def __init__(self, dim: int, temb_dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([SpatialTransformer(dim, context_dim, heads)])
        self.resnets = nn.ModuleList([ResnetBlock(dim, dim, temb_dim), ResnetBlock(dim, dim, temb_dim)])


class TimestepEmbedding(nn.Module):
    """Linear C0 -> 4*C0, SiLU, Linear 4*C0 -> 4*C0."""

    def __init__(self, c_in: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(c_in, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


# ---------------------------------------------------------------------------------------------------------------------
# The 3D denoiser
# ---------------------------------------------------------------------------------------------------------------------


class OracleUNet3D(nn.Module):
    """MagicAnimate's ``UNet3DConditionModel`` (spec §2.2, §2.3), written plainly.

    State-dict keys = diffusers ``UNet2DConditionModel`` keys (SD1.5 layout, same channels) + 20 x 28 motion-module
    keys.
    The positional-encoding buffers are filled with the sin/cos table at construction.
    """

    def __init__(
        self,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        cross_attention_dim: int = 768,
        heads: int = 8,
        layers_per_block: int = 2,
        in_channels: int = 4,
        out_channels: int = 4,
    ) -> None:
        super().__init__()
        channels = tuple(block_out_channels)
        if len(channels) != 4:
            raise ValueError("the SD1.5 layout has exactly 4 blocks")
        self.block_out_channels = channels
        self.layers_per_block = layers_per_block
        c0 = channels[0]
        temb_dim = 4 * c0

        self.conv_in = nn.Conv2d(in_channels, c0, 3, padding=1)
        self.time_embedding = TimestepEmbedding(c0, temb_dim)

        # Down path: 3 x CrossAttnDown + 1 x Down (no attention, no downsampler). Track the skip widths as they are
        # pushed, so the up path can pop them (spec §2.2: conv_in output, every layer output, every downsampler output).
        skip_widths = [c0]
        self.down_blocks = nn.ModuleList()
        c_prev = c0
        for i, c in enumerate(channels):
            io = [(c_prev if j == 0 else c, c) for j in range(layers_per_block)]
            last = i == len(channels) - 1
            block = UNetBlock(io, not last, temb_dim, cross_attention_dim, heads, None if last else "down")
            self.down_blocks.append(block)
            skip_widths += [c] * layers_per_block + ([] if last else [c])
            c_prev = c

        self.mid_block = MidBlock(channels[-1], temb_dim, cross_attention_dim, heads)

        # Up path: 1 x Up (no attention) + 3 x CrossAttnUp, layers_per_block + 1 resnets each, each resnet consuming
        # [current, popped skip] along channels.
        self.up_blocks = nn.ModuleList()
        c_cur = channels[-1]
        for i, c in enumerate(reversed(channels)):
            io = []
            for _ in range(layers_per_block + 1):
                io.append((c_cur + skip_widths.pop(), c))
                c_cur = c
            last = i == len(channels) - 1
            self.up_blocks.append(UNetBlock(io, i > 0, temb_dim, cross_attention_dim, heads, None if last else "up"))
        assert not skip_widths

        self.conv_norm_out = nn.GroupNorm(32, c0, eps=1e-5)
        self.conv_out = nn.Conv2d(c0, out_channels, 3, padding=1)

    def reference_blocks(self) -> list[SpatialTransformer]:
        """The spatial transformers whose self-attention reads bank k = 0..9 (spec §4 order)."""
        blocks = [self.mid_block.attentions[0]]
        for up in list(self.up_blocks)[1:]:
            blocks += list(up.attentions)
        return blocks

    def forward(
        self,
        sample: Tensor,
        t: int | float | Tensor,
        text: Tensor,
        down_residuals: Sequence[Tensor] | None = None,
        mid_residual: Tensor | None = None,
        reference_bank: dict[int, Tensor] | None = None,
        ref_rows: Tensor | None = None,
    ) -> Tensor:
        """Predict the noise.

        Args:
            sample: (b, 4, f, h, w) noisy latents.
            t: scalar timestep (int, float or 0-d tensor), or a (b,) tensor.
            text: (b, 77, ctx) text embeddings (one row per batch element; repeated per frame inside).
            down_residuals: 12 tensors (b, C_i, f, h_i, w_i), added to the 12 stored skips after the down pass.
            mid_residual: (b, C_mid, f, h/8, w/8), added to the mid-block output.
            reference_bank: {k: (N_k, C_k)} for k = 0..9 (spec §4 order), the appearance encoder's norm1 outputs.
            ref_rows: (b,) bool, which batch elements use reference attention (default: all, when a bank is given).
        Returns:
            (b, 4, f, h, w) predicted noise.
        """
        b = sample.shape[0]
        t_tensor = torch.as_tensor(t, device=sample.device, dtype=torch.float32).reshape(-1).expand(b)
        temb = self.time_embedding(timestep_embedding(t_tensor, self.block_out_channels[0]))  # (b, 4*C0)
        if reference_bank is not None and ref_rows is None:
            ref_rows = torch.ones(b, dtype=torch.bool, device=sample.device)
        bank_iter = iter(range(len(BANK_BLOCK_NAMES)))

        def bank_for_next_block() -> Tensor | None:
            k = next(bank_iter)
            return None if reference_bank is None else reference_bank[k]

        x = per_frame(self.conv_in, sample)
        skips = [x]

        # Down pass: resnet -> transformer -> motion module; skip stored after the motion module (spec §2.2).
        for block in self.down_blocks:
            for j, resnet in enumerate(block.resnets):
                x = resnet(x, temb)
                if block.attentions is not None:
                    x = block.attentions[j](x, text, None, None)
                x = block.motion_modules[j](x)
                skips.append(x)
            if hasattr(block, "downsamplers"):
                x = block.downsamplers[0](x)
                skips.append(x)

        # ControlNet residuals: added to the stored skips (not to the tensor flowing into the mid block).
        if down_residuals is not None:
            if len(down_residuals) != len(skips):
                raise ValueError(f"expected {len(skips)} down residuals, got {len(down_residuals)}")
            skips = [s + r for s, r in zip(skips, down_residuals, strict=True)]

        # Mid block (reference attention k = 0, no motion module).
        x = self.mid_block.resnets[0](x, temb)
        x = self.mid_block.attentions[0](x, text, bank_for_next_block(), ref_rows)
        x = self.mid_block.resnets[1](x, temb)
        if mid_residual is not None:
            x = x + mid_residual

        # Up pass: concat [current, popped skip] -> resnet -> transformer (reference attention k = 1..9)
        # -> motion module.
        for block in self.up_blocks:
            for j, resnet in enumerate(block.resnets):
                x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
                if block.attentions is not None:
                    x = block.attentions[j](x, text, bank_for_next_block(), ref_rows)
                x = block.motion_modules[j](x)
            if hasattr(block, "upsamplers"):
                x = block.upsamplers[0](x)

        # Output head: GroupNorm jointly over all frames (5D), SiLU, per-frame conv.
        x = F.silu(self.conv_norm_out(x))
        return per_frame(self.conv_out, x)


# ---------------------------------------------------------------------------------------------------------------------
# Appearance encoder (spec §2.4, §4 "Write")
# ---------------------------------------------------------------------------------------------------------------------


class _StopForward(Exception):
    """Raised by the last norm1 hook to stop the appearance encoder early (its tail has no weights)."""


class OracleAppearanceEncoder:
    """Wraps a diffusers ``UNet2DConditionModel`` (SD1.5 layout) and returns the 10 reference banks.

    The banks are the outputs of ``norm1`` of the 10 transformer blocks of :data:`BANK_BLOCK_NAMES`. The forward is
    stopped right after the last capture, so the stripped tail (last block's attn1/attn2/ff, proj_out, output head)
    is never run.
    """

    def __init__(self, unet2d: nn.Module) -> None:
        self.unet = unet2d
        self.norm1_modules = [unet2d.get_submodule(name + ".norm1") for name in BANK_BLOCK_NAMES]

    @torch.no_grad()
    def __call__(self, ref_latent: Tensor, t: int | float | Tensor, text: Tensor) -> dict[int, Tensor]:
        """ref_latent (1, 4, h, w) clean reference latent; t scalar timestep; text (1, 77, ctx).

        Returns {k: (N_k, C_k)} for k = 0..9 (N_k = tokens of block k's resolution).
        """
        if ref_latent.shape[0] != 1 or text.shape[0] != 1:
            raise ValueError("the oracle appearance encoder runs at batch 1")
        bank: dict[int, Tensor] = {}
        handles = []
        last = len(self.norm1_modules) - 1

        def make_hook(k: int):
            def hook(_module: nn.Module, _inputs: object, output: Tensor) -> None:
                bank[k] = output[0].detach().clone()  # (N, C)
                if k == last:
                    raise _StopForward

            return hook

        for k, module in enumerate(self.norm1_modules):
            handles.append(module.register_forward_hook(make_hook(k)))
        try:
            self.unet(ref_latent, torch.as_tensor(t), encoder_hidden_states=text)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if len(bank) != len(BANK_BLOCK_NAMES):
            raise RuntimeError(f"captured {len(bank)} of {len(BANK_BLOCK_NAMES)} banks")
        return bank


# ---------------------------------------------------------------------------------------------------------------------
# Scheduler (spec §5.1) and context windows (spec §5.4)
# ---------------------------------------------------------------------------------------------------------------------


def oracle_alphas_cumprod(num_train_timesteps: int = 1000) -> Tensor:
    """Linear betas ``linspace(0.00085, 0.012, 1000)`` in fp32; returns ``cumprod(1 - beta)`` (1000,) fp32."""
    betas = torch.linspace(0.00085, 0.012, num_train_timesteps, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


def oracle_timesteps(steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """DDIM "leading" spacing with steps_offset 1: ``ratio = 1000 // steps``, ``t_i = (steps-1-i) * ratio + 1``."""
    ratio = num_train_timesteps // steps
    return [k * ratio + 1 for k in reversed(range(steps))]


def oracle_ddim_update(x_t: Tensor, eps: Tensor, t: int, alphas_cumprod: Tensor, step_ratio: int) -> Tensor:
    """DDIM eta = 0 (spec §5.1): ``x0 = (x_t - sqrt(1-a_t) eps) / sqrt(a_t)``, ``x_prev = sqrt(a_prev) x0 +
    sqrt(1-a_prev) eps`` with ``a_prev = alphas_cumprod[t - step_ratio]`` or 1.0 when that index is negative."""
    a_t = alphas_cumprod[t]
    a_prev = alphas_cumprod[t - step_ratio] if t - step_ratio >= 0 else torch.tensor(1.0, dtype=alphas_cumprod.dtype)
    x0 = (x_t - (1 - a_t) ** 0.5 * eps) / a_t**0.5
    return a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps


def _bit_reversed_fraction(step: int) -> float:
    """h(s) of spec §5.4: the 64-bit bit-reversal of s, divided by 2^64 (h(0) = 0)."""
    bits = format(step, "064b")
    return int(bits[::-1], 2) / 2**64


def oracle_windows(
    num_frames: int,
    size: int = 16,
    overlap: int = 4,
    closed_loop: bool = True,
    step: int = 0,
    stride: int = 1,
) -> list[list[int]]:
    """The "uniform" context scheduler of spec §5.4, written from its text.

    Returns the windows, each a list of ``size`` frame indices (or all frames if ``num_frames <= size``).
    Dilations: the spec says "d in {1, 2, 4, ...} below the capped stride". Read literally (d < capped) that would give
    no window at all for the capped stride 1 the pipeline uses, so it is read as ``d = 2^e`` for
    ``e = 0 .. capped - 1`` (the AnimateDiff-style reading). Both readings agree whenever only d = 1 is produced.
    """
    if num_frames <= size:
        return [list(range(num_frames))]
    capped = min(stride, math.ceil(math.log2(num_frames / size)) + 1)
    h = _bit_reversed_fraction(step)
    windows = []
    for e in range(capped):
        d = 2**e
        pad = round(num_frames * h)
        end = num_frames + pad + (0 if closed_loop else -overlap)
        j = math.floor(h * d) + pad
        while j < end:
            windows.append([(j + k * d) % num_frames for k in range(size)])
            j += size * d - overlap
    return windows


# ---------------------------------------------------------------------------------------------------------------------
# One denoising step (spec §5.3)
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def oracle_controlnet_residuals(
    controlnet: nn.Module,
    control_frames: Tensor,
    x_t: Tensor,
    t: int,
    text_cond: Tensor,
    conditioning_scale: float = 1.0,
    chunk: int = 16,
) -> tuple[list[Tensor], Tensor]:
    """Run the diffusers ``ControlNetModel`` once per frame (batched in chunks), cond text only (spec §5.3 item 3).

    control_frames (F, 3, 8h, 8w) in [0, 1] RGB; x_t (1, 4, F, h, w); text_cond (1, 77, ctx).
    Returns (12 tensors (F, C_i, h_i, w_i), mid (F, C_mid, h/8, w/8)), already multiplied by the scale.
    """
    frames = x_t[0].permute(1, 0, 2, 3)  # (F, 4, h, w)
    num_frames = frames.shape[0]
    downs: list[list[Tensor]] = []
    mids: list[Tensor] = []
    for start in range(0, num_frames, chunk):
        x = frames[start : start + chunk]
        n = x.shape[0]
        down, mid = controlnet(
            x,
            torch.as_tensor(t),
            encoder_hidden_states=text_cond.expand(n, -1, -1),
            controlnet_cond=control_frames[start : start + chunk],
            conditioning_scale=conditioning_scale,
            return_dict=False,
        )
        downs.append(list(down))
        mids.append(mid)
    down_res = [torch.cat([d[i] for d in downs], dim=0) for i in range(len(downs[0]))]
    return down_res, torch.cat(mids, dim=0)


def _gather_window(per_frame_tensor: Tensor, window: Sequence[int], batch: int) -> Tensor:
    """(F, C, h, w) per-frame cache -> (batch, C, len(window), h, w), same values in every batch row."""
    picked = per_frame_tensor[list(window)]  # (f, C, h, w)
    return picked.permute(1, 0, 2, 3)[None].expand(batch, -1, -1, -1, -1)


@torch.no_grad()
def oracle_guided_eps(
    unet: OracleUNet3D,
    appearance_bank: dict[int, Tensor] | None,
    controlnet: nn.Module | None,
    control_frames: Tensor | None,
    x_t: Tensor,
    t: int,
    text_cond: Tensor,
    text_uncond: Tensor,
    guidance_scale: float = 7.5,
    windows: Sequence[Sequence[int]] | None = None,
    conditioning_scale: float = 1.0,
) -> Tensor:
    """Spec §5.3 items 3-6: ControlNet per frame, denoiser per window on [uncond, cond], per-frame average, CFG.

    x_t (1, 4, F, h, w); control_frames (F, 3, 8h, 8w) (ignored if ``controlnet`` is None); text_* (1, 77, ctx);
    appearance_bank {k: (N_k, C_k)} used for the cond half only (uncond = plain self-attention).
    ``guidance_scale == 1`` runs the cond half only (spec §6 item 12 extension; mathematically the same value).
    Returns the guided noise estimate (1, 4, F, h, w).
    """
    num_frames = x_t.shape[2]
    if windows is None:
        windows = oracle_windows(num_frames, 16, 4, closed_loop=True)
    if controlnet is not None:
        assert control_frames is not None
        cn_down, cn_mid = oracle_controlnet_residuals(controlnet, control_frames, x_t, t, text_cond, conditioning_scale)
    use_cfg = guidance_scale != 1.0
    if use_cfg:
        text = torch.cat([text_uncond, text_cond], dim=0)
        ref_rows = torch.tensor([False, True])
    else:
        text = text_cond
        ref_rows = torch.tensor([True])
    batch = text.shape[0]

    acc = torch.zeros(batch, *x_t.shape[1:], dtype=x_t.dtype)
    count = torch.zeros(num_frames, dtype=x_t.dtype)
    for window in windows:
        idx = torch.tensor(list(window))
        x_w = x_t[:, :, idx].expand(batch, -1, -1, -1, -1)
        down_res = mid_res = None
        if controlnet is not None:
            down_res = [_gather_window(r, window, batch) for r in cn_down]  # shared by both halves
            mid_res = _gather_window(cn_mid, window, batch)
        eps_w = unet(x_w, t, text, down_res, mid_res, appearance_bank, ref_rows if appearance_bank else None)
        acc.index_add_(2, idx, eps_w)
        count.index_add_(0, idx, torch.ones(len(idx), dtype=x_t.dtype))
    if (count == 0).any():
        raise ValueError("some frames are not covered by any window")
    eps = acc / count[None, None, :, None, None]
    if not use_cfg:
        return eps
    eps_uncond, eps_cond = eps[0:1], eps[1:2]
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


@torch.no_grad()
def oracle_step(
    unet: OracleUNet3D,
    appearance_bank: dict[int, Tensor] | None,
    controlnet: nn.Module | None,
    control_frames: Tensor | None,
    x_t: Tensor,
    t: int,
    alphas_cumprod: Tensor,
    text_cond: Tensor,
    text_uncond: Tensor,
    guidance_scale: float = 7.5,
    windows: Sequence[Sequence[int]] | None = None,
    step_ratio: int = 40,
    conditioning_scale: float = 1.0,
) -> Tensor:
    """ONE denoising step of spec §5.3 (items 3-7), all in fp32.

    Args:
        unet: the oracle denoiser.
        appearance_bank: {k: (N_k, C_k)} from :class:`OracleAppearanceEncoder` at this t (None: no reference).
        controlnet: diffusers ``ControlNetModel`` (None: no ControlNet residuals).
        control_frames: (F, 3, 8h, 8w) RGB in [0, 1].
        x_t: (1, 4, F, h, w) current latents.
        t: integer timestep.
        alphas_cumprod: (1000,) table (:func:`oracle_alphas_cumprod`).
        text_cond / text_uncond: (1, 77, ctx).
        guidance_scale: CFG scale (7.5 in the reference).
        windows: denoiser windows (default: :func:`oracle_windows` (F, 16, 4), closed loop).
        step_ratio: ``1000 // steps`` (40 for 25 steps); ``t_prev = t - step_ratio``.
        conditioning_scale: ControlNet residual scale (1.0).
    Returns:
        x_{t-step_ratio}: (1, 4, F, h, w).
    """
    eps = oracle_guided_eps(
        unet,
        appearance_bank,
        controlnet,
        control_frames,
        x_t,
        t,
        text_cond,
        text_uncond,
        guidance_scale,
        windows,
        conditioning_scale,
    )
    return oracle_ddim_update(x_t, eps, t, alphas_cumprod, step_ratio)
