"""SaveVideo: decode the LATENT video in chunks and encode it straight into an mp4 (long videos without the RAM)."""

from __future__ import annotations

import json
import os
from fractions import Fraction

import folder_paths
from comfy.cli_args import args

from ..magicanimate.comfy_adapter.streaming_decode import (
    audio_track,
    check_latent,
    decode_to_video,
    spatial_scale,
    video_rate_and_audio,
)
from ..magicanimate.errors import MagicAnimateError
from .api import CATEGORY, InputImpl, io, search_aliases, ui
from .validation import check_widgets, refuse_invalid

NAME = "MagicAnimate Save Video (long videos)"  # the display name: as the widget checks name the node


class SaveVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicAnimateSaveVideo", display_name=NAME,
            category=CATEGORY, **search_aliases("MagicAnimateSaveVideo"),
            description="VAE Decode + Create Video + Save Video in one node for long videos: decodes the LATENT a "
                        "few frames at a time straight into an H.264 mp4 in the output folder, so RAM does not grow "
                        "with the video's length. Same frames as the core nodes.",
            inputs=[
                io.Latent.Input("samples", tooltip="The latent video from MagicAnimate Temporal Sample (one latent "
                                                   "per frame)."),
                io.Vae.Input("vae", tooltip="The SD1.5 VAE that decodes the latents (the one of Appearance "
                                            "Encode)."),
                io.Float.Input("fps", default=25.0, min=0.01, max=1000.0, step=1.0,
                               tooltip="Frame rate of the file in frames per second. Ignored when a video is "
                                       "connected: its frame rate is used (it is the driving video's timing)."),
                io.String.Input("filename_prefix", default="MagicAnimate/video",
                                tooltip="File name prefix under ComfyUI's output folder, as in core Save Video "
                                        "(subfolders and %date:yyyy-MM-dd% allowed); _00001_.mp4 etc. is added."),
                io.Int.Input("chunk_frames", default=16, min=1, max=4096,
                             tooltip="Number of frames decoded at once: RAM holds at most this many decoded "
                                     "frames (512x512: 3 MB a frame). The frames equal core VAE Decode's (from 3 "
                                     "up; 1-2 may round a rare pixel value differently)."),
                io.Audio.Input("audio", optional=True,
                               tooltip="Optional sound track, muxed into the file and cut to the video's length; "
                                       "when connected it wins over the audio of the video input."),
                io.Video.Input("video", optional=True,
                               tooltip="Optional, e.g. the driving video from core Load Video: its frame rate "
                                       "replaces fps, and its audio is used unless audio is connected."),
            ],
            outputs=[io.Video.Output(display_name="VIDEO", tooltip="The saved file as a VIDEO for later nodes.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, fps=None, chunk_frames=None) -> bool | str:
        return check_widgets(cls, fps=fps, chunk_frames=chunk_frames)

    @classmethod
    def execute(cls, samples, vae, fps: float = 25.0, filename_prefix: str = "MagicAnimate/video",
                chunk_frames: int = 16, audio=None, video=None) -> io.NodeOutput:
        if fps is not None and not (float(fps) > 0):  # NaN too
            raise MagicAnimateError(f"{NAME}: fps is {fps}; it must be a positive number of frames per second.")
        refuse_invalid(cls, fps=fps, chunk_frames=chunk_frames)
        latent = check_latent(samples, NAME)
        rate, track = Fraction(round(float(fps) * 1000), 1000), audio_track(audio)
        if video is not None:
            rate, video_track = video_rate_and_audio(video)
            if rate <= 0:
                raise MagicAnimateError(f"{NAME}: the video input reports a frame rate of {rate}; disconnect it "
                                        "and set fps instead.")
            track = track if audio is not None else video_track
        scale = spatial_scale(vae)
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), latent.shape[-1] * scale, latent.shape[-2] * scale)
        file = f"{filename}_{counter:05}_.mp4"
        path, _ = decode_to_video(vae, latent, chunk_frames, os.path.join(folder, file), rate,
                                  metadata=cls._metadata(), audio=track)
        saved = ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)])
        return io.NodeOutput(InputImpl.VideoFromFile(str(path)), ui=saved)

    @classmethod
    def _metadata(cls) -> dict[str, str] | None:
        """The prompt and workflow as JSON container tags, as core Save Video stores them (none with
        --disable-metadata)."""
        if args.disable_metadata:
            return None
        hidden = getattr(cls, "hidden", None)
        found = dict(getattr(hidden, "extra_pnginfo", None) or {})
        if getattr(hidden, "prompt", None) is not None:
            found["prompt"] = hidden.prompt
        return {key: json.dumps(value) for key, value in found.items()} or None
