"""Thin ComfyUI V3 node adapters; the math lives in ``magicanimate/``."""

from .appearance import AppearanceEncode
from .loader import LoadMagicAnimate
from .motion_lora import MotionLoRA
from .pose import PoseControl
from .pose_align import PoseAlign
from .sample import TemporalSample
from .save_video import SaveVideo
from .segments import SegmentFuse

NODES = [LoadMagicAnimate, AppearanceEncode, PoseControl, SegmentFuse, TemporalSample, PoseAlign, MotionLoRA,
         SaveVideo]

__all__ = ["NODES"]
