"""Reading MagicAnimate model files safely and sorting their keys.

Files are read with safetensors or ``torch.load(weights_only=True)``; a pickle that would need to run code is refused.
Nothing here writes to a model file. Every failure is a :class:`CheckpointError` naming the file and the fix.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import re
import zipfile
from dataclasses import dataclass, field

import torch

from .errors import CheckpointError
from .model_layout import TEMPORAL
from .motion_module import motion_module_keys

__all__ = ["read_state_dict", "unwrap_state_dict", "strip_prefixes", "TemporalCheckpoint", "parse_temporal_checkpoint",
           "MOTION_KEY_MARKER", "foreign_kind", "check_safetensors_header",
           "check_zip_records", "check_finite"]

MOTION_KEY_MARKER = ".motion_modules."


def _tensor_dict(obj: object, path: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a state dict (found {type(obj).__name__}); expected a mapping of "
                              "parameter names to tensors.")
    out = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not out:
        raise CheckpointError(f"{path} holds no tensors; it is not a model checkpoint.")
    return out


def unwrap_state_dict(obj: object, path: str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded checkpoint, unwrapping ``{"state_dict": ...}`` or ``{"module": ...}``."""
    if isinstance(obj, dict):
        for key in ("state_dict", "module", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                return _tensor_dict(inner, path)
    return _tensor_dict(obj, path)


def _starts_like_pickle(path: str) -> bool:
    """True when the file starts like a torch zip archive or a pickle stream (parsed, never executed)."""
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(b"PK\x03\x04"):
        return True
    try:
        next(pickletools.genops(io.BytesIO(head)))
    except Exception:
        return False
    return True


#: Bytes per element of every safetensors dtype.
_SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                            "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1, "C64": 8}
#: A safetensors header larger than this is refused (the real 5 GB files have ~100 kB headers).
MAX_SAFETENSORS_HEADER = 100 << 20


def _corrupt(path: str, what: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a readable .safetensors file ({what}). It is probably truncated or "
                           "corrupt; download it again.")


def check_safetensors_header(path: str, size: int) -> int:
    """Parse a .safetensors header (8-byte length + JSON) and check every tensor's extent against the file size.

    Returns the number of tensors. Refuses (before anything is allocated for tensors) a header length beyond the file
    or :data:`MAX_SAFETENSORS_HEADER`, a header that is not a JSON object of well-formed entries, and tensors whose
    shape and dtype do not match their byte range or whose ranges do not fit in the file.
    """
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise _corrupt(path, f"{size} bytes, shorter than a header")
        n = int.from_bytes(head, "little")
        if n < 2 or n > size - 8 or n > MAX_SAFETENSORS_HEADER:
            raise _corrupt(path, f"its header claims {n} bytes but the file has {size}")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _corrupt(path, "its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "its header is not a JSON object")
    data_len = size - 8 - n
    total = 0
    count = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count += 1
        ok = isinstance(entry, dict) and entry.get("dtype") in _SAFETENSORS_DTYPE_BYTES
        shape, offsets = (entry.get("shape"), entry.get("data_offsets")) if ok else (None, None)
        ok = ok and isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
        ok = ok and isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
        if not ok:
            raise _corrupt(path, f"tensor entry {count} of its header is malformed")
        begin, end = offsets
        numel = 1
        for d in shape:
            numel *= d
        if not 0 <= begin <= end <= data_len or end - begin != numel * _SAFETENSORS_DTYPE_BYTES[entry["dtype"]]:
            raise _corrupt(path, f"tensor entry {count} of its header does not fit in the file's {data_len} data "
                                 "bytes")
        total += end - begin
    if total > data_len:
        raise _corrupt(path, f"its tensors claim {total} bytes but the file holds {data_len}")
    return count


def check_zip_records(path: str, size: int) -> None:
    """Refuse a torch zip checkpoint whose records are compressed or claim more bytes than the file holds.

    Only the zip's central directory is read. torch.save stores records uncompressed; a compressed record would be
    inflated into memory by torch.load, so a small file could take any amount of RAM.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise CheckpointError(f"{path} could not be read as a PyTorch checkpoint (its zip directory is damaged). It "
                              "is probably truncated; download it again.") from None
    total = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"{path} holds compressed records; torch.save never writes those, and inflating "
                                  "them could take far more memory than the file's size, so it was not loaded. Use "
                                  "the original file from the model's release.")
        total += info.file_size
        if info.file_size > size or info.header_offset + info.file_size > size or total > size:
            raise CheckpointError(f"{path} has records that claim more bytes than the file's {size}; it is truncated "
                                  "or damaged, so it was not loaded. Download it again.")


def check_finite(sd: dict[str, torch.Tensor], path: str) -> None:
    """Refuse a state dict with a NaN or Inf in any floating-point tensor, naming the file and the first tensor."""
    for key, tensor in sd.items():
        if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: tensor {key_for_message(key)} holds NaN or Inf values, so every result "
                                  "would be NaN (a black video). The file is damaged or was saved from a diverged "
                                  "training run; download it again or use another file.")


_PRINTABLE_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,200}")


def key_for_message(key: str) -> str:
    """A tensor name as messages show it: only plain parameter-name characters, else a placeholder."""
    return key if _PRINTABLE_KEY.fullmatch(key) else "(a tensor with an unusual name)"


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a ``.safetensors`` or pickled (``.ckpt/.pt/.pth/.bin``) checkpoint onto the CPU, without running code.

    The cost is bounded by the file's size before anything is allocated: a safetensors header is checked against the
    file size, and a torch zip's records must be stored uncompressed within the file; both are then memory-mapped.
    Every floating-point tensor is checked for NaN/Inf. Messages name the file, never quote its bytes.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"model file not found: {path}")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); the download probably failed. Download the file again.")
    if path.lower().endswith(".safetensors"):
        check_safetensors_header(path, size)
        try:
            import safetensors

            with safetensors.safe_open(path, framework="pt", device="cpu") as fh:
                sd = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception:  # safetensors raises its own error types for corrupt files
            raise _corrupt(path, "its tensors could not be read") from None
        check_finite(sd, path)
        return sd
    is_zip = False
    with open(path, "rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"
    if is_zip:
        check_zip_records(path, size)
    try:
        # mmap: tensors are views of the file (copy-on-write, never written back), so RAM is bounded by its size.
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError:
        if not _starts_like_pickle(path):
            raise CheckpointError(f"{path} is not a PyTorch checkpoint (it does not start like one; a failed download "
                                  "often saves an HTML error page instead). Download it again.") from None
        raise CheckpointError(
            f"{path} contains Python objects other than tensors, and loading them could run arbitrary code, so it was "
            "not loaded. Use the original file from the model's release or a .safetensors conversion.") from None
    except (RuntimeError, EOFError, OSError, ValueError, MemoryError, IndexError, KeyError, TypeError):
        raise CheckpointError(f"{path} could not be read as a PyTorch checkpoint. It is probably truncated or not a "
                              "checkpoint; download it again.") from None
    sd = unwrap_state_dict(obj, path)
    check_finite(sd, path)
    return sd


def foreign_kind(sd: dict[str, torch.Tensor]) -> str | None:
    """What a state dict is when it is plainly another kind of model file (for messages), else None."""
    keys = list(sd)
    if any("lora" in k.lower() for k in keys):
        return "a LoRA"
    if any(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "conditioner."))
           for k in keys):
        return "a Stable Diffusion checkpoint in ComfyUI/LDM layout (load it with CheckpointLoaderSimple)"
    if any(k.startswith("add_embedding.") or ".transformer_blocks.9." in k for k in keys):
        return "an SDXL UNet"
    if any(MOTION_KEY_MARKER in k for k in keys):
        return "a temporal (motion-module) checkpoint"
    if any(k.startswith("controlnet_cond_embedding.") for k in keys):
        return "a ControlNet"
    return None


def strip_prefixes(sd: dict[str, torch.Tensor],
                   prefixes: tuple[str, ...] = ("module.", "unet.")) -> dict[str, torch.Tensor]:
    """Remove leading wrapper prefixes (``module.`` from DDP, ``unet.`` from pipeline saves) from every key."""
    out = {}
    for key, value in sd.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key = key[len(p):]
                    changed = True
        out[key] = value
    return out


@dataclass
class TemporalCheckpoint:
    """A parsed temporal checkpoint: the 560 motion-module tensors and, for the full file, the spatial UNet tensors."""

    motion: dict[str, torch.Tensor]
    spatial: dict[str, torch.Tensor]
    block_out_channels: tuple[int, ...]
    path: str = "<checkpoint>"
    notes: list[str] = field(default_factory=list)

    @property
    def has_spatial(self) -> bool:
        return bool(self.spatial)


def parse_temporal_checkpoint(sd: dict[str, torch.Tensor], path: str = "<checkpoint>") -> TemporalCheckpoint:
    """Check that ``sd`` is a MagicAnimate temporal checkpoint and split it into motion and spatial parts.

    Accepts the full 3D-UNet file (SD1.5 spatial keys + 560 motion keys, diffusers names) or a motion-module-only
    file, with ``module.``/``unet.`` prefixes. Refuses LoRAs, LDM-format checkpoints, SDXL UNets and files with
    missing or extra motion-module keys.
    """
    name = os.path.basename(path)
    sd = strip_prefixes(sd)
    keys = list(sd)
    if any("lora" in k.lower() for k in keys):
        raise CheckpointError(f"{name} looks like a LoRA (it has 'lora' keys), not a MagicAnimate temporal "
                              f"checkpoint. {TEMPORAL.hint}.")
    if any(k.startswith(("model.diffusion_model.", "input_blocks.", "first_stage_model.")) for k in keys):
        raise CheckpointError(f"{name} is a Stable Diffusion checkpoint in ComfyUI/LDM layout, not a MagicAnimate "
                              f"temporal checkpoint. Load it with CheckpointLoaderSimple; {TEMPORAL.hint}.")
    if "add_embedding.linear_1.weight" in sd or any(".transformer_blocks.9." in k for k in keys):
        raise CheckpointError(f"{name} is an SDXL UNet; MagicAnimate is built on SD1.5. {TEMPORAL.hint}.")
    motion = {k: v for k, v in sd.items() if MOTION_KEY_MARKER in k}
    spatial = {k: v for k, v in sd.items() if MOTION_KEY_MARKER not in k}
    if not motion:
        raise CheckpointError(f"{name} has no motion-module keys (names containing '{MOTION_KEY_MARKER}'); "
                              f"{TEMPORAL.hint}.")
    extra = sorted(k for k in motion if k not in set(motion_module_keys()))
    if extra:
        raise CheckpointError(
            f"{name} has {len(extra)} motion-module keys MagicAnimate does not use (e.g. "
            f"{key_for_message(extra[0])}); it looks like a different motion model (AnimateDiff v2/v3 add a "
            f"mid-block module). {TEMPORAL.hint}.")
    missing = [k for k in motion_module_keys() if k not in motion]
    if missing:
        raise CheckpointError(f"{name} lacks {len(missing)} of the 560 motion-module tensors (e.g. {missing[0]}); the "
                              "file is incomplete. Download it again.")
    widths = []
    for d in range(4):
        w = motion[f"down_blocks.{d}.motion_modules.0.temporal_transformer.norm.weight"]
        widths.append(int(w.shape[0]))
    for key, tensor in motion.items():
        if key.endswith("pos_encoder.pe") and (tensor.ndim != 3 or tensor.shape[1] != 24):
            raise CheckpointError(f"{name}: {key} has shape {tuple(tensor.shape)}, expected (1, 24, C); this is not "
                                  f"a MagicAnimate motion module. {TEMPORAL.hint}.")
    if widths[0] * 2 != widths[1] or widths[1] * 2 != widths[2] or widths[2] != widths[3]:
        raise CheckpointError(f"{name}: motion-module widths {widths} do not follow SD1.5's 1:2:4:4 layout.")
    notes = []
    if spatial:
        if "conv_in.weight" not in spatial:
            raise CheckpointError(f"{name} has {len(spatial)} non-motion keys but no UNet 'conv_in.weight'; expected "
                                  "a full MagicAnimate denoiser or a motion-module-only file.")
        notes.append(f"{len(spatial)} spatial UNet tensors and {len(motion)} motion-module tensors")
    else:
        notes.append(f"motion modules only ({len(motion)} tensors); spatial weights come from the MODEL input")
    return TemporalCheckpoint(motion=motion, spatial=spatial, block_out_channels=tuple(widths), path=path, notes=notes)
