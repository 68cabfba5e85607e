"""Motion modules, blocks and the whole oracle 3D UNet (``OracleUNet3D``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import (
    BANK_BLOCK_NAMES,
    PE_MAX_LEN,
    Attention,
    FeedForward,
    ResnetBlock,
    SpatialTransformer,
    from_frames,
    per_frame,
    sinusoidal_position_table,
    timestep_embedding,
    to_frames,
)


class PositionalEncoding(nn.Module):
    """Holds the persistent buffer ``pe`` (1, 24, C)."""

    def __init__(self, dim: int, max_len: int = PE_MAX_LEN) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_position_table(max_len, dim), persistent=True)


class TemporalAttention(Attention):
    """attention over the f frames of each spatial location, PE added to the (normalised)
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
    """two Temporal_Self sub-layers (each ``x += TA(LN(x))``), then ``x += FF(ff_norm(x))``."""

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
    """GN(32, eps 1e-6, per frame) -> Linear proj_in -> block -> Linear proj_out -> + input."""

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
    """AnimateDiff-v1 "Vanilla" motion module: a wrapper named ``temporal_transformer`` (diffusers key names)."""

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
    """Mid block: resnet, spatial transformer (bank k = 0), resnet; no motion module."""

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
    """MagicAnimate's ``UNet3DConditionModel``, written plainly.

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
        # pushed, so the up path can pop them (conv_in output, every layer output, every downsampler output).
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
        """The spatial transformers whose self-attention reads bank k = 0..9."""
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
            reference_bank: {k: (N_k, C_k)} for k = 0..9, the appearance encoder's norm1 outputs.
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

        # Down pass: resnet -> transformer -> motion module; skip stored after the motion module.
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
