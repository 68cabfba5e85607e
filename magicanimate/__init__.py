"""MagicAnimate model math, importable without ComfyUI.

Everything directly inside this package is plain PyTorch. The one subpackage that imports ComfyUI is
``magicanimate.comfy_adapter``: it patches ComfyUI's own SD1.5 UNet, ControlNet and sampler with the math defined here.
"""

__all__ = ["errors", "schedule", "windows", "frame_cache", "rows", "noise", "motion_module", "reference_attention",
           "checkpoints", "frames", "ram_check", "model_layout", "diffusers_keys", "densepose", "pose_align",
           "window_device_memory"]
