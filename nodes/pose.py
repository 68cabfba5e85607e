"""PoseControl: DensePose frames + ControlNet -> pose condition."""

from __future__ import annotations

import logging

from ..magicanimate.comfy_adapter.conditioning import PoseCondition
from ..magicanimate.densepose import densepose_style_report
from ..magicanimate.errors import MagicAnimateError
from ..magicanimate.frames import FIT_MODES, to_rgb
from .api import CATEGORY, PoseType, io


class PoseControl(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicAnimatePoseControl", display_name="MagicAnimate Pose Control", category=CATEGORY,
            description="DensePose frames that drive the motion; one output frame per pose frame.",
            inputs=[
                io.ControlNet.Input("control_net", tooltip="The DensePose ControlNet from Load MagicAnimate."),
                io.Image.Input("pose_frames", tooltip="DensePose video frames (viridis renderings) as an IMAGE batch."),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Multiplier on the ControlNet residuals; 1.0 is the reference."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Fraction of sampling before which the pose is ignored (0 = from the start)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Fraction of sampling after which the pose stops applying (1 = to the end)."),
                io.Combo.Input("fit", options=list(FIT_MODES), default="stretch",
                               tooltip="How frames of another size are fitted to the video size; stretch is the "
                                       "reference."),
            ],
            outputs=[PoseType.Output(display_name="pose")],
        )

    @classmethod
    def execute(cls, control_net, pose_frames, strength: float = 1.0, start_percent: float = 0.0,
                end_percent: float = 1.0, fit: str = "stretch") -> io.NodeOutput:
        if pose_frames.ndim != 4 or pose_frames.shape[0] == 0:
            raise MagicAnimateError("PoseControl: pose_frames is empty; connect a DensePose video's frames "
                                    "(e.g. LoadVideo -> GetVideoComponents).")
        if end_percent < start_percent:
            raise MagicAnimateError(f"PoseControl: end_percent ({end_percent}) is before start_percent "
                                    f"({start_percent}).")
        problem = densepose_style_report(pose_frames)
        if problem:
            logging.getLogger("MagicAnimate").warning(
                "PoseControl: these frames may not be DensePose viridis renderings: %s. The MagicAnimate "
                "ControlNet was trained on viridis DensePose (dark purple background); results may be poor.", problem)
        cond = PoseCondition(control_net=control_net, frames=to_rgb(pose_frames).cpu(), strength=strength,
                             start_percent=start_percent, end_percent=end_percent, fit=fit)
        return io.NodeOutput(cond)
