"""The only part of the package that imports ComfyUI: it builds and patches ComfyUI models with MagicAnimate's math.

Modules:
- ``model_files``: turn MagicAnimate's diffusers-layout files into ComfyUI models (UNet, appearance encoder, ControlNet,
  motion modules).
- ``runtime``: the per-model state shared by the patches (frames per window, reference bank, ControlNet cache).
- ``patch``: apply MagicAnimate to a ComfyUI ``ModelPatcher`` (injections, attention replaces, wrappers).
- ``context``: MagicAnimate's segment windows on top of ComfyUI's context-window machinery.
- ``sampling``: the reference schedule and the sampling entry point used by the TemporalSample node.
"""
