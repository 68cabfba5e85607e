"""Every key and mark the pack puts on ComfyUI objects, in one place.

ComfyUI files wrappers, callbacks, injections and additional models under string keys, and ``model_options`` entries
under string names; other code (ours and core's) finds them by the same strings. Each one is a named constant here,
and nothing else in the pack builds such a string.
"""

from __future__ import annotations

__all__ = ["TEMPORAL_INJECTIONS", "FRAMES_WRAPPER", "POSITIONS_WRAPPER", "CORE_SAMPLER_CHECK", "CONDITIONING",
           "REFERENCE_ATTENTION", "WINDOW_MEMORY", "SHARED_WEIGHTS_CALLBACK", "RUN_CLEANUP_CALLBACK", "ROW_LABELS",
           "REFERENCE_ATTENTION_MARK",
           "SEGMENT_HANDLER_MARK"]

#: ``ModelPatcher`` injections of the temporal denoiser (motion modules, joint GroupNorm). A MODEL that has them is a
#: MagicAnimate temporal MODEL.
TEMPORAL_INJECTIONS = "magicanimate"
#: ``DIFFUSION_MODEL`` wrapper that tells the temporal overrides how many frames the window has.
FRAMES_WRAPPER = "magicanimate_frames"
#: ``PREDICT_NOISE`` wrapper that puts the motion modules' position tables on the sampling device.
POSITIONS_WRAPPER = "magicanimate_positions"
#: ``OUTER_SAMPLE`` wrapper that warns when a core sampler samples the temporal MODEL.
CORE_SAMPLER_CHECK = "magicanimate_core_sampler_check"
#: The four conditioning wrappers (appearance and DensePose ControlNet) and their additional models. Their
#: ``OUTER_SAMPLE`` wrapper marks a MODEL prepared by Temporal Sample.
CONDITIONING = "magicanimate_conditioning"
#: Wrappers of the reference attention chained with other nodes' attention replaces.
REFERENCE_ATTENTION = "magicanimate_attention"
#: ``model_options`` entry holding the window memory estimate; also the key of the wrappers that answer with it.
WINDOW_MEMORY = "magicanimate_window_memory"
#: ``ON_DETACH`` callback of a private module tree that shares a user's weights.
SHARED_WEIGHTS_CALLBACK = "magicanimate_shared_weights"
#: ``ON_CLEANUP`` callback of the temporal MODEL: the sampling run is over, per-run state of its window handler goes.
RUN_CLEANUP_CALLBACK = "magicanimate_run_cleanup"
#: ``transformer_options`` entry: per cond chunk of a model call, 0 for positive-text rows, 1 for the others (the
#: reference attention's row labels, worked out before the UNet runs).
ROW_LABELS = "magicanimate_row_labels"
#: Attribute set on the pack's attn1 replace functions, so a wrapper can tell them from other nodes' replaces.
REFERENCE_ATTENTION_MARK = "_magicanimate_reference_attention"
#: Class attribute of the pack's context handler. An attribute test, not ``isinstance``: a second import of the pack
#: under another name has its own class object.
SEGMENT_HANDLER_MARK = "magicanimate_segments"
