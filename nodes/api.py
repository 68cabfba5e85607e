"""The one place that imports ComfyUI's node API; pinning a numbered version later is a one-line change."""

from comfy_api.latest import ComfyExtension, io, ui  # noqa: F401

#: Custom socket types (created once: io.Custom makes a new class per call).
AppearanceEncoderType = io.Custom("MAGICANIMATE_APPEARANCE_ENCODER")
AppearanceType = io.Custom("MAGICANIMATE_APPEARANCE")
PoseType = io.Custom("MAGICANIMATE_POSE")
SegmentsType = io.Custom("MAGICANIMATE_SEGMENTS")

CATEGORY = "MagicAnimate"
