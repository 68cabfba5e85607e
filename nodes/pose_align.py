"""PoseAlign: driving DensePose frames + the reference photo's DensePose -> frames fitted to the photo's body."""

from __future__ import annotations

import logging

from ..magicanimate.errors import MagicAnimateError
from ..magicanimate.frames import to_rgb
from ..magicanimate.pose_align import ALIGN_MODES, align_pose
from .api import CATEGORY, io, search_aliases
from .validation import check_widgets, refuse_invalid


class PoseAlign(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicAnimatePoseAlign", display_name="MagicAnimate Pose Align", category=CATEGORY,
            **search_aliases("MagicAnimatePoseAlign"),
            description="Scales and shifts a driving DensePose video so that the body's height and centre match the "
                        "reference photo's (one transform for the whole video: the motion is unchanged), for a "
                        "taller, shorter or off-centre dancer. Feed its output to Pose Control. Beyond the "
                        "reference.",
            inputs=[
                io.Image.Input("pose_frames", tooltip="Driving DensePose frames (viridis renderings on the dark purple "
                                                      "background) as an IMAGE batch; frame count and size are "
                                                      "kept."),
                io.Image.Input("reference_pose", tooltip="One DensePose rendering of the reference photo (e.g. from a "
                                                         "DensePose estimator run on the photo); the body is measured "
                                                         "from its non-background pixels."),
                io.Combo.Input("mode", options=list(ALIGN_MODES), default="first-frame",
                               tooltip="Where the driving body is measured. first-frame: the first frame; median: "
                                       "the median height and centre over all frames (robust to a few bad frames; "
                                       "frames without a body are skipped)."),
            ],
            outputs=[io.Image.Output(display_name="pose_frames")],
        )

    @classmethod
    def validate_inputs(cls, mode=None) -> bool | str:
        return check_widgets(cls, mode=mode)

    @classmethod
    def execute(cls, pose_frames, reference_pose, mode: str = "first-frame") -> io.NodeOutput:
        refuse_invalid(cls, mode=mode)
        for name, value in (("pose_frames", pose_frames), ("reference_pose", reference_pose)):
            if getattr(value, "ndim", 0) != 4 or value.shape[0] == 0 or value.shape[1] == 0 or value.shape[2] == 0:
                raise MagicAnimateError(f"PoseAlign: {name} is empty or not an IMAGE (shape "
                                        f"{tuple(getattr(value, 'shape', ()))}); connect DensePose renderings.")
            if value.shape[-1] not in (1, 3, 4):
                raise MagicAnimateError(f"PoseAlign: {name} has shape {tuple(value.shape)}; expected an IMAGE batch "
                                        "(frames, height, width, 3 channels) of DensePose renderings.")
        if reference_pose.shape[0] != 1:
            raise MagicAnimateError(f"PoseAlign: reference_pose holds {reference_pose.shape[0]} images; connect the "
                                    "one DensePose rendering of the reference photo (e.g. pick it with "
                                    "ImageFromBatch).")
        frames, transform = align_pose(to_rgb(pose_frames), to_rgb(reference_pose), mode)
        logging.getLogger("MagicAnimate").info("PoseAlign: %s (%s)", transform.describe(), mode)
        return io.NodeOutput(frames)
