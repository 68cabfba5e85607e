"""AppearanceEncode: reference IMAGE -> reference latent for the appearance encoder."""

from __future__ import annotations

from ..magicanimate.comfy_adapter.conditioning import Appearance
from ..magicanimate.errors import MagicAnimateError
from ..magicanimate.frames import FIT_MODES, fit_images
from .api import CATEGORY, AppearanceEncoderType, AppearanceType, io


class AppearanceEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicAnimateAppearanceEncode", display_name="MagicAnimate Appearance Encode", category=CATEGORY,
            description="Encodes the reference photo with the VAE; the appearance encoder reads it at every step.",
            inputs=[
                AppearanceEncoderType.Input("appearance_encoder", tooltip="From Load MagicAnimate."),
                io.Vae.Input("vae", tooltip="SD1.5 VAE (the reference uses sd-vae-ft-mse)."),
                io.Image.Input("image", tooltip="Reference photo of the person; the first image of a batch is used."),
                io.Combo.Input("fit", options=list(FIT_MODES), default="stretch",
                               tooltip="stretch: resize to width x height like the reference; pad: keep aspect and "
                                       "pad; crop: keep aspect and cut the centre."),
                io.Int.Input("width", default=512, min=64, max=4096, step=8,
                             tooltip="Output video width in pixels (multiple of 8); the reference uses 512."),
                io.Int.Input("height", default=512, min=64, max=4096, step=8,
                             tooltip="Output video height in pixels (multiple of 8); the reference uses 512."),
            ],
            outputs=[AppearanceType.Output(display_name="appearance")],
        )

    @classmethod
    def execute(cls, appearance_encoder, vae, image, fit: str = "stretch", width: int = 512,
                height: int = 512) -> io.NodeOutput:
        if width % 8 or height % 8:
            raise MagicAnimateError(f"AppearanceEncode: width and height must be multiples of 8, got "
                                    f"{width}x{height}.")
        if image.ndim != 4 or image.shape[0] == 0:
            raise MagicAnimateError("AppearanceEncode: the image input is empty.")
        pixels = fit_images(image[:1], width, height, fit)
        latent = vae.encode(pixels)
        return io.NodeOutput(Appearance(encoder=appearance_encoder, latent=latent[:1].cpu()))
