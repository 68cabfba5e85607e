"""The one place that imports ComfyUI's node API; pinning a numbered version later is a one-line change."""

from comfy_api.latest import ComfyExtension, InputImpl, io, ui  # noqa: F401

#: Custom socket types (created once: io.Custom makes a new class per call).
AppearanceEncoderType = io.Custom("MAGICANIMATE_APPEARANCE_ENCODER")
AppearanceType = io.Custom("MAGICANIMATE_APPEARANCE")
PoseType = io.Custom("MAGICANIMATE_POSE")
SegmentsType = io.Custom("MAGICANIMATE_SEGMENTS")

CATEGORY = "MagicAnimate"

#: Words a user may search the node library with, per node id. ComfyUI versions whose ``io.Schema`` has
#: ``search_aliases`` (newer than 0.3.75) get them (:func:`search_aliases`); frontend 1.32.9 searches only the node
#: id and display name (words starting within their first 30 characters), so the display names carry "DensePose",
#: "pose video", "dance" and "Animate Anyone" too (tests/nodes/test_node_search.py).
SEARCH_ALIASES: dict[str, list[str]] = {
    "MagicAnimateLoader": ["DensePose", "dance", "Animate Anyone", "human image animation", "motion module"],
    "MagicAnimateAppearanceEncode": ["reference image", "Animate Anyone", "dance", "identity"],
    "MagicAnimatePoseControl": ["DensePose", "pose video", "dance", "ControlNet", "Animate Anyone"],
    "MagicAnimateSegmentFuse": ["context window", "sliding window", "long video"],
    "MagicAnimateTemporalSample": ["pose video", "dance", "Animate Anyone", "DensePose", "video sampler"],
    "MagicAnimatePoseAlign": ["DensePose", "pose video", "retarget", "body size", "dance"],
    "MagicAnimateMotionLoRA": ["AnimateDiff", "motion LoRA", "camera motion", "zoom", "pan"],
    "MagicAnimateSaveVideo": ["save video", "VAE decode", "long video", "mp4", "export video"],
}


def search_aliases(node_id: str) -> dict:
    """``{"search_aliases": [...]}`` for ``io.Schema(**...)`` where this ComfyUI supports it, else ``{}``."""
    fields = getattr(io.Schema, "__dataclass_fields__", {})
    aliases = SEARCH_ALIASES.get(node_id, [])
    return {"search_aliases": list(aliases)} if "search_aliases" in fields and aliases else {}
