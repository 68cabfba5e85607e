"""PoseControl: DensePose frames + ControlNet -> pose condition."""

from __future__ import annotations

import torch

from ..magicanimate.comfy_adapter.composition_checks import warn_in_ui
from ..magicanimate.comfy_adapter.payloads import PoseCondition
from ..magicanimate.comfy_adapter.pose_video import video_frame_source
from ..magicanimate.densepose import densepose_style_report
from ..magicanimate.errors import MagicAnimateError
from ..magicanimate.frames import FIT_MODES, to_rgb
from ..magicanimate.pose_frames import TensorFrames
from .api import CATEGORY, PoseType, io, search_aliases
from .validation import check_widgets, refuse_invalid


class PoseControl(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicAnimatePoseControl", display_name="Pose Control (DensePose video)", category=CATEGORY,
            **search_aliases("MagicAnimatePoseControl"),
            description="Turns a DensePose video (viridis body-part renderings: a VIDEO from Load Video, read a few "
                        "frames at a time, or an IMAGE batch) into the motion that Temporal Sample follows; the "
                        "output video has one frame per pose frame.",
            inputs=[
                io.ControlNet.Input("control_net", tooltip="The DensePose ControlNet from Load MagicAnimate."),
                io.MultiType.Input("pose_frames", types=[io.Image, io.Video],
                                   tooltip="DensePose frames (viridis renderings on a dark purple background): a "
                                           "VIDEO straight from Load Video (decoded a few frames at a time, for long "
                                           "videos) or an IMAGE batch (e.g. Get Video Components, Pose Align); one "
                                           "output frame per pose frame."),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Multiplier on the ControlNet residuals: how strongly the pose steers the "
                                       "motion; 1.0 is the reference, 0 ignores the pose."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="When the pose starts to apply, as a 0..1 fraction of the sampling steps "
                                       "(0 = from the first step, the reference)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="When the pose stops applying, as a 0..1 fraction of the sampling steps "
                                       "(1 = to the last step, the reference)."),
                io.Combo.Input("fit", options=list(FIT_MODES), default="stretch",
                               tooltip="How pose frames of another size are brought to the video size: stretch "
                                       "(the reference), pad or crop, as in Appearance Encode."),
            ],
            outputs=[PoseType.Output(display_name="pose")],
        )

    @classmethod
    def validate_inputs(cls, strength=None, start_percent=None, end_percent=None, fit=None) -> bool | str:
        return check_widgets(cls, strength=strength, start_percent=start_percent, end_percent=end_percent, fit=fit)

    @classmethod
    def execute(cls, control_net, pose_frames, strength: float = 1.0, start_percent: float = 0.0,
                end_percent: float = 1.0, fit: str = "stretch") -> io.NodeOutput:
        refuse_invalid(cls, strength=strength, start_percent=start_percent, end_percent=end_percent, fit=fit)
        if end_percent < start_percent:
            raise MagicAnimateError(f"PoseControl: end_percent ({end_percent}) is before start_percent "
                                    f"({start_percent}); set end_percent to at least start_percent.")
        if not isinstance(pose_frames, torch.Tensor):
            source, first = video_frame_source(pose_frames)
            if not isinstance(source, TensorFrames):
                return cls._from_video(control_net, source, first, strength, start_percent, end_percent, fit)
            pose_frames = source.images  # a VIDEO that already holds its frames: the IMAGE path
        if pose_frames.ndim != 4 or pose_frames.shape[0] == 0:
            raise MagicAnimateError("PoseControl: pose_frames is empty; connect a DensePose video's frames "
                                    "(e.g. LoadVideo -> GetVideoComponents).")
        if pose_frames.shape[-1] not in (1, 3, 4) or pose_frames.shape[1] == 0 or pose_frames.shape[2] == 0:
            raise MagicAnimateError(f"PoseControl: pose_frames has shape {tuple(pose_frames.shape)}; expected an IMAGE "
                                    "batch (frames, height, width, 3 channels) of DensePose renderings.")
        frames = to_rgb(pose_frames)
        _warn_unless_densepose(frames)
        cond = PoseCondition(control_net=control_net, frames=frames.cpu(), strength=strength,
                             start_percent=start_percent, end_percent=end_percent, fit=fit)
        return io.NodeOutput(cond)

    @classmethod
    def _from_video(cls, control_net, source, first: torch.Tensor, strength: float, start_percent: float,
                    end_percent: float, fit: str) -> io.NodeOutput:
        if source.length == 0:
            raise MagicAnimateError("PoseControl: the pose_frames VIDEO has no frames; connect Load Video with a "
                                    "DensePose video file.")
        # A look at the first frames only: the video is decoded a chunk at a time while sampling.
        _warn_unless_densepose(to_rgb(first))
        cond = PoseCondition(control_net=control_net, frames=source, strength=strength,
                             start_percent=start_percent, end_percent=end_percent, fit=fit)
        return io.NodeOutput(cond)


def _warn_unless_densepose(frames: torch.Tensor) -> None:
    """A warning on the node when IMAGE frames ``(B, H, W, 3)`` do not look like viridis DensePose."""
    problem = densepose_style_report(frames)
    if problem:
        message = (f"These frames may not be DensePose viridis renderings: {problem}. The MagicAnimate "
                   "ControlNet was trained on viridis DensePose (dark purple background); results may be poor. "
                   "Use DensePose renderings with the viridis colour map, like MagicAnimate's example videos "
                   "(DensePose Estimator of comfyui_controlnet_aux: cmap Viridis (MagicAnimate)).")
        warn_in_ui("PoseControl warning: " + message)
