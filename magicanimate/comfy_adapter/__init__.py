"""The only part of the package that imports ComfyUI: it builds and patches ComfyUI models with MagicAnimate's math.

See docs/ARCHITECTURE.md ("Where each concept lives") for the map. Modules:
- ``model_folders``: the model folders registered with ``folder_paths``, their listings and the one resolver from a
  model name to a path; ``loaders``: every function that builds a ComfyUI model from a MagicAnimate file (temporal
  UNet, appearance encoder, ControlNet, motion modules); ``model_tree``: a MODEL of our own sharing a user's SD1.5
  weights; ``motion_lora``: motion LoRAs.
- ``temporal``: the temporal denoiser (motion modules, joint GroupNorm) on a ``ModelPatcher``; ``model_sampling``:
  the reference schedule as ComfyUI model sampling.
- ``conditioning``: installs the appearance and DensePose conditioning wrappers; ``conditioning_state``: their
  per-run state; ``appearance``: the encoder's reference bank and reference attention; ``pose_residuals``: the
  per-frame ControlNet residual cache; ``attention_chain``: reference attention chained with other nodes' replaces;
  ``payloads``: the Appearance and PoseCondition data the nodes pass.
- ``context``: the segment (context window) loop; ``core_control``: core ControlNets under those windows.
- ``memory_required``: the MagicAnimate MODEL's answer to ComfyUI's ``BaseModel.memory_required`` (one window's
  device memory); ``composition_checks``: what core nodes did to the MODEL, checked when a run starts.
- ``sampling``: sampler choice, sigmas, noise and ``sample_video``; ``animate``: one whole animation, the entry point
  of Temporal Sample.
- ``keys``: every wrapper, injection and option key; ``dtypes``: the dtype a network computes in.
"""
