"""diffusers ``config.json`` contents of MagicAnimate's appearance encoder and DensePose ControlNet, by size."""

from __future__ import annotations

__all__ = ["FULL", "TINY", "appearance_encoder_config", "controlnet_config"]

TINY: dict = dict(block_out_channels=(32, 64, 128, 128), cross_attention_dim=32)
FULL: dict = dict(block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768)

_DOWN_TYPES = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_UP_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")


def appearance_encoder_config(cfg: dict) -> dict:
    """A diffusers-0.21 ``UNet2DConditionModel`` config.json (SD1.5 type) with MagicAnimate's class name."""
    return {
        "_class_name": "AppearanceEncoderModel",
        "_diffusers_version": "0.21.4",
        "act_fn": "silu",
        "addition_embed_type": None,
        "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": None,
        "attention_head_dim": 8,
        "attention_type": "default",
        "block_out_channels": list(cfg["block_out_channels"]),
        "center_input_sample": False,
        "class_embed_type": None,
        "class_embeddings_concat": False,
        "conv_in_kernel": 3,
        "conv_out_kernel": 3,
        "cross_attention_dim": cfg["cross_attention_dim"],
        "cross_attention_norm": None,
        "down_block_types": list(_DOWN_TYPES),
        "downsample_padding": 1,
        "dual_cross_attention": False,
        "encoder_hid_dim": None,
        "encoder_hid_dim_type": None,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_only_cross_attention": None,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "num_attention_heads": None,
        "num_class_embeds": None,
        "only_cross_attention": False,
        "out_channels": 4,
        "projection_class_embeddings_input_dim": None,
        "resnet_out_scale_factor": 1.0,
        "resnet_skip_time_act": False,
        "resnet_time_scale_shift": "default",
        "sample_size": 64,
        "time_cond_proj_dim": None,
        "time_embedding_act_fn": None,
        "time_embedding_dim": None,
        "time_embedding_type": "positional",
        "timestep_post_act": None,
        "transformer_layers_per_block": 1,
        "up_block_types": list(_UP_TYPES),
        "upcast_attention": False,
        "use_linear_projection": False,
    }


def controlnet_config(cfg: dict) -> dict:
    """A diffusers ``ControlNetModel`` config.json (SD1.5 type, rgb, conditioning channels 16/32/96/256)."""
    return {
        "_class_name": "ControlNetModel",
        "_diffusers_version": "0.21.4",
        "act_fn": "silu",
        "addition_embed_type": None,
        "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": None,
        "attention_head_dim": 8,
        "block_out_channels": list(cfg["block_out_channels"]),
        "class_embed_type": None,
        "conditioning_channels": 3,
        "conditioning_embedding_out_channels": [16, 32, 96, 256],
        "controlnet_conditioning_channel_order": "rgb",
        "cross_attention_dim": cfg["cross_attention_dim"],
        "down_block_types": list(_DOWN_TYPES),
        "downsample_padding": 1,
        "encoder_hid_dim": None,
        "encoder_hid_dim_type": None,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "global_pool_conditions": False,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "num_attention_heads": None,
        "num_class_embeds": None,
        "only_cross_attention": False,
        "projection_class_embeddings_input_dim": None,
        "resnet_time_scale_shift": "default",
        "transformer_layers_per_block": 1,
        "upcast_attention": False,
        "use_linear_projection": False,
    }
