"""SegmentFuse: how the video is cut into overlapping windows and fused."""

from __future__ import annotations

from ..magicanimate.comfy_adapter.context import FUSE_METHODS, SegmentOptions
from .api import CATEGORY, SegmentsType, io


class SegmentFuse(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicAnimateSegmentFuse", display_name="MagicAnimate Segment Fuse", category=CATEGORY,
            description="Overlapping segments whose predictions are averaged per frame (segment fusion).",
            inputs=[
                io.Int.Input("length", default=16, min=1, max=24, tooltip="Frames per segment; the reference uses 16."),
                io.Int.Input("overlap", default=4, min=0, max=23,
                             tooltip="Frames shared by neighbouring segments; the reference uses 4."),
                io.Boolean.Input("closed_loop", default=True,
                                 tooltip="On: the last segment wraps around to the first frames (the reference). "
                                         "Off: the last segment is clamped to the video end."),
                io.Combo.Input("fuse", options=list(FUSE_METHODS), default="average",
                               tooltip="average: plain per-frame mean (the reference); pyramid: weight frames near a "
                                       "segment's centre more."),
            ],
            outputs=[SegmentsType.Output(display_name="segments")],
        )

    @classmethod
    def execute(cls, length: int = 16, overlap: int = 4, closed_loop: bool = True,
                fuse: str = "average") -> io.NodeOutput:
        from ..magicanimate.errors import MagicAnimateError

        try:
            return io.NodeOutput(SegmentOptions(length, overlap, closed_loop, fuse))
        except ValueError as exc:
            raise MagicAnimateError(f"SegmentFuse: {exc}") from exc
