"""The model files the pack reads: names, ComfyUI model folders, config.json kinds, hints and download sources.

The one place these are written down. The loaders, the model-folder listing, the nodes' messages and
``scripts/animate.py`` (which reports missing files before ComfyUI starts) all read them from here. Plain Python:
importable without ComfyUI or torch, and loadable by file path.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HF", "FETCH_COMMAND", "MAGICANIMATE_REPO", "MAGICANIMATE_FOLDER", "MOTION_LORA_FOLDER",
           "CORE_LORA_FOLDER", "CHECKPOINT_EXTENSIONS", "CONFIG_FILE", "DIFFUSERS_WEIGHT_FILES", "KINDS", "Download",
           "ModelFile", "TEMPORAL", "APPEARANCE", "CONTROLNET", "SD15_CHECKPOINT", "SD15_TEXT_ENCODER", "SD_VAE",
           "MAGICANIMATE_FILES", "FILES", "FETCHED", "BY_KIND", "config_kind"]

HF = "https://huggingface.co"
#: The command that fetches every file the templates need (run from the pack's folder with ComfyUI's Python).
FETCH_COMMAND = "python -m scripts.get_models"
#: The Hugging Face repository of the MagicAnimate release (the three networks).
MAGICANIMATE_REPO = "zcxu-eric/MagicAnimate"

#: ComfyUI model folder (``models/magicanimate``) of the three MagicAnimate networks.
MAGICANIMATE_FOLDER = "magicanimate"
#: AnimateDiff-Evolved's folder for motion LoRAs (registered the same way, so either pack finds files put there).
MOTION_LORA_FOLDER = "animatediff_motion_lora"
#: Core ComfyUI's LoRA folder, also searched for motion LoRAs.
CORE_LORA_FOLDER = "loras"

#: Extensions of a temporal checkpoint file in ``models/magicanimate``.
CHECKPOINT_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")
#: A diffusers folder holds this config and one of :data:`DIFFUSERS_WEIGHT_FILES` (tried in this order).
CONFIG_FILE = "config.json"
DIFFUSERS_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                          "diffusion_pytorch_model.bin")
#: The three kinds of entry in the ``models/magicanimate`` listing.
KINDS = ("temporal", "appearance", "controlnet")


@dataclass(frozen=True)
class Download:
    """One file of a Hugging Face repository: ``repo`` id, ``path`` within it and the ``revision`` it is taken from."""

    repo: str
    path: str
    revision: str = "main"

    @property
    def url(self) -> str:
        return f"{HF}/{self.repo}/resolve/{self.revision}/{self.path}"


@dataclass(frozen=True)
class ModelFile:
    """A file (or diffusers folder) the pack or its templates read, and everything a message says about it.

    ``folder`` is the ComfyUI model folder name (``folder_paths``), ``name`` the file or folder name in it. For the
    MagicAnimate networks, ``kind`` is the listing kind, ``listed_as`` how the listing's refusal names it,
    ``put_hint`` what that refusal tells the user to put in the folder, ``hint`` what a loader's error says is
    expected, and ``likely`` the text that sorts an entry first in the dropdown.
    """

    folder: str
    name: str
    is_dir: bool
    what: str
    size: str
    downloads: tuple[Download, ...]
    kind: str = ""
    listed_as: str = ""
    put_hint: str = ""
    hint: str = ""
    likely: str = ""

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(d.url for d in self.downloads)

    @property
    def destination(self) -> str:
        """Where it goes, relative to the ComfyUI folder (a folder ends with ``/``)."""
        return f"ComfyUI/models/{self.folder}/{self.name}" + ("/" if self.is_dir else "")


def _diffusers_folder_files(path: str) -> tuple[Download, ...]:
    return (Download(MAGICANIMATE_REPO, f"{path}/{CONFIG_FILE}"),
            Download(MAGICANIMATE_REPO, f"{path}/{DIFFUSERS_WEIGHT_FILES[0]}"))


_MA_DIR = f"ComfyUI/models/{MAGICANIMATE_FOLDER}/"
#: Ends every "where it goes" hint: the command that fetches the file.
_FETCH = f" (or run `{FETCH_COMMAND}` in the pack's folder: it fetches every model file)"

TEMPORAL = ModelFile(
    MAGICANIMATE_FOLDER, "temporal_attention.ckpt", False, "MagicAnimate temporal UNet (motion modules)",
    "about 5.11 GB", (Download(MAGICANIMATE_REPO, "temporal_attention/temporal_attention.ckpt"),),
    kind="temporal", listed_as="a temporal checkpoint",
    put_hint="temporal_attention.ckpt (or a motion-module file)",
    hint=("MagicAnimate's temporal_attention.ckpt (from the MagicAnimate release, folder "
          f"MagicAnimate/temporal_attention/) goes in {_MA_DIR}{_FETCH}"),
    likely="temporal")

APPEARANCE = ModelFile(
    MAGICANIMATE_FOLDER, "appearance_encoder", True, "MagicAnimate appearance encoder, a folder of 2 files",
    "about 3.4 GB", _diffusers_folder_files("appearance_encoder"),
    kind="appearance", listed_as="an appearance-encoder folder",
    put_hint=f"the appearance_encoder folder ({CONFIG_FILE} of a UNet + {DIFFUSERS_WEIGHT_FILES[0]})",
    hint=(f"the MagicAnimate appearance_encoder folder ({CONFIG_FILE} + {DIFFUSERS_WEIGHT_FILES[0]}) goes in "
          f"{_MA_DIR}appearance_encoder/{_FETCH}"),
    likely="appearance")

CONTROLNET = ModelFile(
    MAGICANIMATE_FOLDER, "densepose_controlnet", True, "MagicAnimate DensePose ControlNet, a folder of 2 files",
    "about 1.4 GB", _diffusers_folder_files("densepose_controlnet"),
    kind="controlnet", listed_as="a DensePose ControlNet folder",
    put_hint=f"the densepose_controlnet folder ({CONFIG_FILE} of a ControlNet + {DIFFUSERS_WEIGHT_FILES[0]})",
    hint=(f"the MagicAnimate densepose_controlnet folder ({CONFIG_FILE} + {DIFFUSERS_WEIGHT_FILES[0]}) goes in "
          f"{_MA_DIR}densepose_controlnet/{_FETCH}"),
    likely="densepose")

#: The SD1.5 checkpoint the templates load (its text encoder; the txt2img templates' image model).
SD15_CHECKPOINT = ModelFile(
    "checkpoints", "v1-5-pruned-emaonly.safetensors", False,
    "Stable Diffusion 1.5 checkpoint (its text encoder; the txt2img model)", "about 4.27 GB",
    (Download("stable-diffusion-v1-5/stable-diffusion-v1-5", "v1-5-pruned-emaonly.safetensors"),))

#: SD1.5's own text encoder (CLIP ViT-L/14, the transformers layout of the SD1.5 repository's ``text_encoder/``), read
#: by core ``CLIPLoader`` (type ``stable_diffusion``): the animation templates encode their (empty) prompts with it,
#: the same conditioning as the checkpoint's CLIP in 0.5 GB instead of 4.3 GB.
SD15_TEXT_ENCODER = ModelFile(
    "text_encoders", "sd15_text_encoder.safetensors", False,
    "Stable Diffusion 1.5 text encoder (CLIP ViT-L/14, for core Load CLIP)", "about 492 MB",
    (Download("stable-diffusion-v1-5/stable-diffusion-v1-5", "text_encoder/model.safetensors"),))

#: The VAE the templates load: sd-vae-ft-mse, the one MagicAnimate uses.
SD_VAE = ModelFile(
    "vae", "vae-ft-mse-840000-ema-pruned.safetensors", False, "sd-vae-ft-mse VAE (the one MagicAnimate uses)",
    "about 335 MB", (Download("stabilityai/sd-vae-ft-mse-original", "vae-ft-mse-840000-ema-pruned.safetensors"),))

MAGICANIMATE_FILES = (TEMPORAL, APPEARANCE, CONTROLNET)
#: Every file the shipped templates name.
FILES = (SD15_TEXT_ENCODER, SD15_CHECKPOINT, SD_VAE) + MAGICANIMATE_FILES
#: What the fetch command (``scripts/get_models.py``) gets by default: everything the animation templates need (the
#: SD1.5 checkpoint only for the text-to-image template, on request).
FETCHED = (SD15_TEXT_ENCODER, SD_VAE) + MAGICANIMATE_FILES
#: Listing kind -> the MagicAnimate network of that kind.
BY_KIND = {f.kind: f for f in MAGICANIMATE_FILES}


def config_kind(config: object) -> str | None:
    """"controlnet", "appearance" (a UNet) or None for a parsed diffusers ``config.json``.

    Decided by ``_class_name`` and by keys only a ControlNet (``conditioning_embedding_out_channels``,
    ``controlnet_conditioning_channel_order``) or a UNet (``down_block_types`` with ``cross_attention_dim``) has; a
    VAE, a text encoder or a scheduler config is neither.
    """
    if not isinstance(config, dict):
        return None
    cls = config.get("_class_name")
    cls = cls if isinstance(cls, str) else ""
    if ("ControlNet" in cls or "conditioning_embedding_out_channels" in config
            or "controlnet_conditioning_channel_order" in config):
        return "controlnet"
    if cls.endswith(("UNet2DConditionModel", "UNet3DConditionModel", "AppearanceEncoderModel")) or (
            "down_block_types" in config and "cross_attention_dim" in config):
        return "appearance"
    return None
