"""Thin ComfyUI V3 node adapters; the math lives in ``magicanimate/``."""

from .appearance import AppearanceEncode
from .loader import LoadMagicAnimate
from .pose import PoseControl
from .sample import TemporalSample
from .segments import SegmentFuse

NODES = [LoadMagicAnimate, AppearanceEncode, PoseControl, SegmentFuse, TemporalSample]

__all__ = ["NODES"]
