"""The oracle appearance encoder: the 10 reference banks of a diffusers 2D UNet."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import BANK_BLOCK_NAMES

# ---------------------------------------------------------------------------------------------------------------------
# Appearance encoder
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
