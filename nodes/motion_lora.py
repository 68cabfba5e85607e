"""MotionLoRA: an AnimateDiff-layout motion LoRA on the MagicAnimate MODEL's motion modules (core LoRA patches)."""

from __future__ import annotations

from ..magicanimate.checkpoints import read_state_dict
from ..magicanimate.comfy_adapter import model_folders
from ..magicanimate.comfy_adapter.composition_checks import warn_in_ui
from ..magicanimate.comfy_adapter.motion_lora import apply_motion_lora
from .api import CATEGORY, io, search_aliases
from .validation import check_widgets, refuse_invalid

NAME = "Motion LoRA (MagicAnimate)"


class MotionLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicAnimateMotionLoRA", display_name=NAME, category=CATEGORY,
            **search_aliases("MagicAnimateMotionLoRA"),
            description="Applies an AnimateDiff motion LoRA (v1/v2 SD1.5 layout, e.g. zoom-in or pan-left) to the "
                        "motion modules of the MagicAnimate MODEL, as core LoRA patches: it stacks with "
                        "LoraLoaderModelOnly (for the UNet), hooks and model merges. Beyond the reference.",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL from Load MagicAnimate (or from a node after it)."),
                io.Combo.Input("lora_name", options=model_folders.motion_lora_names(),
                               tooltip="Motion LoRA file from models/animatediff_motion_lora or models/loras, with "
                                       "AnimateDiff's key names (...motion_modules...processor.to_q_lora.up.weight). "
                                       "An SD1.5 image LoRA goes through LoraLoaderModelOnly instead."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="Multiplier of the LoRA's change to the motion modules: 0 leaves the MODEL "
                                       "as it is, 1 applies it as trained, negative values push the other way."),
            ],
            outputs=[io.Model.Output(display_name="MODEL")],
        )

    @classmethod
    def validate_inputs(cls, lora_name=None, strength=None) -> bool | str:
        return check_widgets(cls, lora_name=lora_name, strength=strength)

    @classmethod
    def execute(cls, model, lora_name: str, strength: float = 1.0) -> io.NodeOutput:
        refuse_invalid(cls, strength=strength)
        path = model_folders.resolve_motion_lora(lora_name)
        patched, count, unmatched = apply_motion_lora(model, read_state_dict(path), float(strength), lora_name)
        if unmatched:
            warn_in_ui(f"{NAME}: {len(unmatched)} of the tensors in {lora_name} match no MagicAnimate motion module "
                       f"and were left out (e.g. {unmatched[0]}; MagicAnimate has no mid-block motion module, which "
                       f"AnimateDiff v2 LoRAs also patch). {count} motion-module weights were patched.")
        return io.NodeOutput(patched)
