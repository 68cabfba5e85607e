"""The only part of the package that imports ComfyUI: it builds and patches ComfyUI models with MagicAnimate's math.

See docs/ARCHITECTURE.md ("Where each concept lives") for the map. Modules:
- ``loading``, ``model_files``: MagicAnimate's files into ComfyUI models (UNet, appearance encoder, ControlNet,
  motion modules); ``model_tree``: a MODEL of our own sharing a user's SD1.5 weights; ``motion_lora``: motion LoRAs.
- ``temporal``: the temporal denoiser (motion modules, joint GroupNorm, the reference schedule) on a ``ModelPatcher``.
- ``conditioning``: appearance (reference attention) and DensePose ControlNet conditioning; ``attention_chain``:
  reference attention chained with other nodes' attention replaces.
- ``context``: the segment (context window) loop; ``core_control``: core ControlNets under those windows.
- ``memory_estimate``: ComfyUI's memory estimate for the MagicAnimate MODEL; ``composition_checks``: what core nodes
  did to the MODEL, checked when a run starts.
- ``sampling``: the reference schedule and the sampling entry point used by the TemporalSample node.
"""
