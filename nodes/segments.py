"""SegmentFuse: how the video is cut into overlapping windows and fused."""

from __future__ import annotations

from ..magicanimate.comfy_adapter.context import FUSE_METHODS, SegmentOptions
from .api import CATEGORY, SegmentsType, io, search_aliases
from .validation import check_widgets, refuse_invalid


class SegmentFuse(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicAnimateSegmentFuse", display_name="MagicAnimate Segment Fuse", category=CATEGORY,
            **search_aliases("MagicAnimateSegmentFuse"),
            description="How a long video is denoised: overlapping segments of frames whose predictions are averaged "
                        "per frame (segment fusion). Optional; without it Temporal Sample uses the reference's 16 "
                        "frames, overlap 4, closed loop.",
            inputs=[
                io.Int.Input("length", default=16, min=1, max=24,
                             tooltip="Frames per segment (what the motion module sees at once); the reference uses "
                                     "16, at most 24. Longer segments need more memory."),
                io.Int.Input("overlap", default=4, min=0, max=23,
                             tooltip="Frames shared by neighbouring segments (less than length); the reference uses "
                                     "4. More overlap: smoother joins, more segments to compute."),
                io.Boolean.Input("closed_loop", default=True,
                                 tooltip="On: the last segment wraps around to the first frames (the reference, "
                                         "for looping motion). Off: the last segment ends at the last frame."),
                io.Combo.Input("fuse", options=list(FUSE_METHODS), default="average",
                               tooltip="How overlapping predictions are combined per frame. average: plain mean "
                                       "(the reference); pyramid: frames near a segment's centre weigh more."),
            ],
            outputs=[SegmentsType.Output(display_name="segments")],
        )

    @classmethod
    def validate_inputs(cls, fuse=None) -> bool | str:
        return check_widgets(cls, fuse=fuse)

    @classmethod
    def execute(cls, length: int = 16, overlap: int = 4, closed_loop: bool = True,
                fuse: str = "average") -> io.NodeOutput:
        from ..magicanimate.errors import MagicAnimateError

        refuse_invalid(cls, length=length, overlap=overlap, fuse=fuse)
        try:
            return io.NodeOutput(SegmentOptions(length, overlap, closed_loop, fuse))
        except ValueError as exc:
            raise MagicAnimateError(f"SegmentFuse: {exc}") from exc
