"""LoadMagicAnimate: the three MagicAnimate model files -> temporal MODEL, appearance encoder, DensePose CONTROL_NET."""

from __future__ import annotations

import torch

from ..magicanimate.comfy_adapter import model_folders
from ..magicanimate.comfy_adapter.loaders import load_appearance_encoder, load_densepose_controlnet, load_temporal_model
from ..magicanimate.model_layout import CONFIG_FILE, DIFFUSERS_WEIGHT_FILES, MAGICANIMATE_FOLDER, TEMPORAL
from .api import CATEGORY, AppearanceEncoderType, io, search_aliases
from .validation import check_widgets, refuse_invalid

_MODELS = f"models/{MAGICANIMATE_FOLDER}/"
_FILES = f"{CONFIG_FILE} and {DIFFUSERS_WEIGHT_FILES[0]}"
DTYPES = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class LoadMagicAnimate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicAnimateLoader", display_name="Load MagicAnimate (Animate Anyone-style)", category=CATEGORY,
            **search_aliases("MagicAnimateLoader"),
            description=f"Loads the three MagicAnimate networks from ComfyUI/{_MODELS}: the temporal UNet "
                        "(SD1.5 + motion modules) as a MODEL, the appearance encoder and the DensePose ControlNet. "
                        "Feed them to Appearance Encode, Pose Control and Temporal Sample.",
            inputs=[
                io.Combo.Input("temporal_checkpoint", options=model_folders.names("temporal"),
                               tooltip=f"File in {_MODELS}: {TEMPORAL.name} (the whole temporal "
                                       "UNet, 5.1 GB) or a motion-module-only file (then connect an SD1.5 model "
                                       "below for the spatial weights)."),
                io.Combo.Input("appearance_encoder", options=model_folders.names("appearance"),
                               tooltip=f"Folder in {_MODELS} with the appearance encoder's {_FILES} (about 3.4 GB)."),
                io.Combo.Input("densepose_controlnet", options=model_folders.names("controlnet"),
                               tooltip=f"Folder in {_MODELS} with the DensePose ControlNet's {_FILES} (about 1.4 GB)."),
                io.Combo.Input("weight_dtype", options=list(DTYPES), default="auto",
                               tooltip="Storage precision of the three networks: auto lets ComfyUI pick (fp16 on "
                                       "most GPUs, fp32 on CPU); fp16 and bf16 need half the memory of fp32."),
                io.Model.Input("model", optional=True,
                               tooltip="Optional SD1.5 MODEL whose spatial UNet weights replace the checkpoint's; "
                                       "needed for a motion-module-only file. Leave it unconnected to match the "
                                       "reference."),
            ],
            outputs=[io.Model.Output(display_name="MODEL"),
                     AppearanceEncoderType.Output(display_name="appearance_encoder"),
                     io.ControlNet.Output(display_name="CONTROL_NET")],
        )

    @classmethod
    def validate_inputs(cls, temporal_checkpoint=None, appearance_encoder=None, densepose_controlnet=None,
                        weight_dtype=None) -> bool | str:
        return check_widgets(cls, temporal_checkpoint=temporal_checkpoint, appearance_encoder=appearance_encoder,
                             densepose_controlnet=densepose_controlnet, weight_dtype=weight_dtype)

    @classmethod
    def execute(cls, temporal_checkpoint: str, appearance_encoder: str, densepose_controlnet: str,
                weight_dtype: str = "auto", model=None) -> io.NodeOutput:
        refuse_invalid(cls, weight_dtype=weight_dtype)
        # Resolve all three before loading anything: a bad name costs no memory.
        paths = [model_folders.resolve(temporal_checkpoint, "temporal"),
                 model_folders.resolve(appearance_encoder, "appearance"),
                 model_folders.resolve(densepose_controlnet, "controlnet")]
        dtype = DTYPES[weight_dtype]
        loaded = load_temporal_model(paths[0], dtype, base_model=model)
        encoder = load_appearance_encoder(paths[1], dtype or loaded.model.model.get_dtype())
        control = load_densepose_controlnet(paths[2], dtype)
        return io.NodeOutput(loaded.model, encoder, control)
