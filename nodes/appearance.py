"""AppearanceEncode: 1 to 4 reference images (an IMAGE batch) -> reference latents for the appearance encoder."""

from __future__ import annotations

from ..magicanimate.comfy_adapter.payloads import Appearance
from ..magicanimate.errors import MagicAnimateError
from ..magicanimate.frames import FIT_MODES, fit_images
from .api import CATEGORY, AppearanceEncoderType, AppearanceType, io, search_aliases
from .validation import check_widgets, refuse_invalid

#: More images give the conditional rows more reference tokens; time and memory grow with each (README).
MAX_REFERENCE_IMAGES = 4


class AppearanceEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicAnimateAppearanceEncode", display_name="MagicAnimate Appearance Encode", category=CATEGORY,
            **search_aliases("MagicAnimateAppearanceEncode"),
            description="Encodes the reference photo (the person to animate) with the VAE at the video size; the "
                        "appearance encoder reads it at every denoising step to keep the person's look. A batch of "
                        "2 to 4 photos of the same person (e.g. front, back, side) is used all together.",
            inputs=[
                AppearanceEncoderType.Input("appearance_encoder", tooltip="Appearance encoder from Load MagicAnimate."),
                io.Vae.Input("vae", tooltip="SD1.5 VAE that encodes the photo (the reference uses sd-vae-ft-mse); "
                                            "decode the video with the same VAE."),
                io.Image.Input("image", tooltip="Reference photo of the person to animate, or a batch of 2 to 4 photos "
                                                "of the same person (front, back, side; e.g. joined with Batch "
                                                "Images): every frame attends to all of them. One photo is the "
                                                "reference's behaviour; each extra photo costs time and memory."),
                io.Combo.Input("fit", options=list(FIT_MODES), default="stretch",
                               tooltip="How the photo is brought to width x height. stretch: resize, ignoring the "
                                       "aspect ratio (the reference); pad: keep the aspect ratio and add borders; "
                                       "crop: keep the aspect ratio and cut the centre."),
                io.Int.Input("width", default=512, min=64, max=4096, step=8,
                             tooltip="Video width in pixels (multiple of 8); the reference uses 512. Time and "
                                     "memory grow with width x height."),
                io.Int.Input("height", default=512, min=64, max=4096, step=8,
                             tooltip="Video height in pixels (multiple of 8); the reference uses 512. Time and "
                                     "memory grow with width x height."),
            ],
            outputs=[AppearanceType.Output(display_name="appearance")],
        )

    @classmethod
    def validate_inputs(cls, fit=None) -> bool | str:
        return check_widgets(cls, fit=fit)

    @classmethod
    def execute(cls, appearance_encoder, vae, image, fit: str = "stretch", width: int = 512,
                height: int = 512) -> io.NodeOutput:
        refuse_invalid(cls, fit=fit, width=width, height=height)
        if width % 8 or height % 8:
            raise MagicAnimateError(f"AppearanceEncode: width and height must be multiples of 8, got "
                                    f"{width}x{height}; use {max(8, round(width / 8) * 8)}x"
                                    f"{max(8, round(height / 8) * 8)}.")
        if image.ndim != 4 or image.shape[0] == 0:
            raise MagicAnimateError("AppearanceEncode: the image input is empty; connect the reference photo "
                                    "(e.g. LoadImage).")
        if image.shape[-1] not in (1, 3, 4) or image.shape[1] == 0 or image.shape[2] == 0:
            raise MagicAnimateError(f"AppearanceEncode: the image input has shape {tuple(image.shape)}; expected an "
                                    "IMAGE (batch, height, width, 1/3/4 channels), e.g. from LoadImage.")
        count = int(image.shape[0])
        if count > MAX_REFERENCE_IMAGES:
            raise MagicAnimateError(f"AppearanceEncode: the image input holds {count} images; it takes 1 to "
                                    f"{MAX_REFERENCE_IMAGES} photos of the same person. Pick the best ones (e.g. "
                                    "with ImageFromBatch); a video is not a reference.")
        pixels = fit_images(image, width, height, fit)
        latent = vae.encode(pixels)
        return io.NodeOutput(Appearance(encoder=appearance_encoder, latent=latent[:count].cpu()))
