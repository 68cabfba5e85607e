"""Hostile and broken model files through Load MagicAnimate (in-process, the node's own ``execute``).

Each bad file must give one :class:`CheckpointError` naming the file and what was expected, never run code, and leave
the file (and its folder) byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from reliability.support import TINY32
from safetensors.torch import save_file

from devtools.pack import load_pack, pack_nodes
from devtools.random_weights.model_files import _shapes_on_meta, random_state_dict, write_temporal_checkpoint

FIX_WORDS = re.compile(r"expected|download|connect|use |load it|goes in|put ", re.IGNORECASE)


class _Pwn:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _tree_digest(path: Path) -> dict[str, tuple[str, int]]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in files}


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------------------------------------------------------------
# Bad files (each writer returns the path the user would pick in the loader)
# ---------------------------------------------------------------------------------------------------------------------


def _sdxl_unet_sd() -> dict[str, torch.Tensor]:
    """A diffusers SDXL-type UNet (text_time embedding, 10-deep transformers), narrow widths, fp16."""
    from diffusers import UNet2DConditionModel

    shapes, _ = _shapes_on_meta(lambda: UNet2DConditionModel(
        sample_size=32, block_out_channels=(32, 64, 128), layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(2, 4, 8), cross_attention_dim=64,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=8 * 6 + 64, norm_num_groups=32))
    return {k: v.half() for k, v in random_state_dict(shapes, seed=7).items()}


def _sd15_lora_sd() -> dict[str, torch.Tensor]:
    """A kohya-format SD1.5 LoRA (rank 4) on a few UNet and text-encoder projections."""
    sd = {}
    for name, width in (("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", 320),
                        ("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k", 1280),
                        ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 768)):
        sd[f"{name}.lora_down.weight"] = torch.randn(4, width).half()
        sd[f"{name}.lora_up.weight"] = torch.zeros(width, 4).half()
        sd[f"{name}.alpha"] = torch.tensor(4.0).half()
    return sd


def _copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def make_bad(kind: str, root: Path, files, marker: Path) -> tuple[str, Path]:
    """(loader slot, path) of the bad entry ``kind`` written under ``root``."""
    if kind == "pickle_that_runs_code.ckpt":
        path = root / "temporal_pwn.ckpt"
        with open(path, "wb") as fh:
            pickle.dump({"state_dict": {"conv_in.weight": _Pwn(marker)}}, fh, protocol=2)
        return "temporal", path
    if kind == "torch.save zip whose pickle runs code":
        path = root / "temporal_pwn_zip.pt"
        torch.save({"conv_in.weight": torch.zeros(1), "payload": _Pwn(marker)}, path)
        return "temporal", path
    if kind == "appearance_encoder/*.bin whose pickle runs code":
        folder = root / "appearance_encoder_pwn"
        folder.mkdir()
        shutil.copy2(files.appearance / "config.json", folder / "config.json")
        torch.save({"conv_in.weight": _Pwn(marker)}, folder / "diffusion_pytorch_model.bin")
        return "appearance", folder
    if kind == "zero-byte .safetensors (temporal)":
        path = root / "temporal_empty.safetensors"
        path.write_bytes(b"")
        return "temporal", path
    if kind == "truncated .safetensors (temporal, half the file)":
        good = root / "good_temporal.safetensors"
        write_temporal_checkpoint(good, TINY32, seed=0, fmt="safetensors")
        path = root / "temporal_truncated.safetensors"
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        good.unlink()
        return "temporal", path
    if kind == "truncated .safetensors (appearance encoder, header only)":
        folder = _copy_folder(files.appearance, root / "appearance_encoder_truncated")
        weights = folder / "diffusion_pytorch_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:4096])
        return "appearance", folder
    if kind == "zero-byte .safetensors (DensePose ControlNet)":
        folder = _copy_folder(files.controlnet, root / "densepose_controlnet_empty")
        (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"")
        return "controlnet", folder
    if kind == ".safetensors with a hostile header length (2^60 bytes)":
        path = root / "temporal_header_bomb.safetensors"
        path.write_bytes((2 ** 60).to_bytes(8, "little") + b"{}" + b" " * 6)
        return "temporal", path
    if kind == "truncated .ckpt (zip cut in half)":
        good = root / "good_temporal.ckpt"
        write_temporal_checkpoint(good, TINY32, seed=0)
        path = root / "temporal_truncated.ckpt"
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        good.unlink()
        return "temporal", path
    if kind == "text file renamed .ckpt":
        path = root / "temporal_text.ckpt"
        path.write_text("<html>404 Not Found</html>\n")
        return "temporal", path
    if kind == "SDXL UNet as temporal checkpoint":
        path = root / "sdxl_unet.safetensors"
        save_file(_sdxl_unet_sd(), str(path))
        return "temporal", path
    if kind == "SDXL UNet as appearance encoder":
        folder = root / "appearance_encoder_sdxl"
        folder.mkdir()
        shutil.copy2(files.appearance / "config.json", folder / "config.json")
        save_file(_sdxl_unet_sd(), str(folder / "diffusion_pytorch_model.safetensors"))
        return "appearance", folder
    if kind == "SDXL UNet as DensePose ControlNet":
        folder = root / "densepose_controlnet_sdxl"
        folder.mkdir()
        shutil.copy2(files.controlnet / "config.json", folder / "config.json")
        save_file(_sdxl_unet_sd(), str(folder / "diffusion_pytorch_model.safetensors"))
        return "controlnet", folder
    if kind == "SD1.5 LoRA as temporal checkpoint":
        path = root / "my_style_lora.safetensors"
        save_file(_sd15_lora_sd(), str(path))
        return "temporal", path
    if kind == "SD1.5 LoRA as appearance encoder":
        folder = root / "appearance_encoder_lora"
        folder.mkdir()
        shutil.copy2(files.appearance / "config.json", folder / "config.json")
        save_file(_sd15_lora_sd(), str(folder / "diffusion_pytorch_model.safetensors"))
        return "appearance", folder
    if kind == "SD1.5 LoRA as DensePose ControlNet":
        folder = root / "densepose_controlnet_lora"
        folder.mkdir()
        shutil.copy2(files.controlnet / "config.json", folder / "config.json")
        save_file(_sd15_lora_sd(), str(folder / "diffusion_pytorch_model.safetensors"))
        return "controlnet", folder
    if kind == "random tensor file as temporal checkpoint":
        path = root / "random_tensors.safetensors"
        save_file({"weight": torch.randn(64, 64), "bias": torch.randn(64)}, str(path))
        return "temporal", path
    if kind == "random tensor file as appearance encoder":
        folder = root / "appearance_encoder_random"
        folder.mkdir()
        shutil.copy2(files.appearance / "config.json", folder / "config.json")
        save_file({"weight": torch.randn(64, 64)}, str(folder / "diffusion_pytorch_model.safetensors"))
        return "appearance", folder
    if kind == "random tensor file as DensePose ControlNet":
        folder = root / "densepose_controlnet_random"
        folder.mkdir()
        shutil.copy2(files.controlnet / "config.json", folder / "config.json")
        save_file({"weight": torch.randn(64, 64)}, str(folder / "diffusion_pytorch_model.safetensors"))
        return "controlnet", folder
    if kind == "motion-module file with missing keys":
        sd = torch.load(files.motion_only, weights_only=True)
        for key in sorted(sd)[:10]:
            del sd[key]
        path = root / "mm_partial.ckpt"
        torch.save(sd, path)
        return "temporal", path
    if kind == "motion-module-only file, no MODEL connected":
        path = root / "mm_only.ckpt"
        shutil.copy2(files.motion_only, path)
        return "temporal", path
    if kind == "appearance encoder folder without config.json":
        folder = _copy_folder(files.appearance, root / "appearance_encoder_no_config")
        (folder / "config.json").unlink()
        return "appearance", folder
    if kind == "appearance encoder config.json that is not JSON":
        folder = _copy_folder(files.appearance, root / "appearance_encoder_bad_json")
        (folder / "config.json").write_text("{ this is not json")
        return "appearance", folder
    if kind == "appearance encoder folder given the ControlNet":
        return "appearance", _copy_folder(files.controlnet, root / "appearance_encoder_is_controlnet")
    if kind == "ControlNet folder given the appearance encoder":
        return "controlnet", _copy_folder(files.appearance, root / "densepose_controlnet_is_encoder")
    if kind == "appearance encoder file given as temporal checkpoint":
        path = root / "appearance_as_temporal.safetensors"
        shutil.copy2(files.appearance / "diffusion_pytorch_model.safetensors", path)
        return "temporal", path
    raise AssertionError(kind)


BAD_FILES = [
    "pickle_that_runs_code.ckpt",
    "torch.save zip whose pickle runs code",
    "appearance_encoder/*.bin whose pickle runs code",
    "zero-byte .safetensors (temporal)",
    "truncated .safetensors (temporal, half the file)",
    "truncated .safetensors (appearance encoder, header only)",
    "zero-byte .safetensors (DensePose ControlNet)",
    ".safetensors with a hostile header length (2^60 bytes)",
    "truncated .ckpt (zip cut in half)",
    "text file renamed .ckpt",
    "SDXL UNet as temporal checkpoint",
    "SDXL UNet as appearance encoder",
    "SDXL UNet as DensePose ControlNet",
    "SD1.5 LoRA as temporal checkpoint",
    "SD1.5 LoRA as appearance encoder",
    "SD1.5 LoRA as DensePose ControlNet",
    "random tensor file as temporal checkpoint",
    "random tensor file as appearance encoder",
    "random tensor file as DensePose ControlNet",
    "motion-module file with missing keys",
    "motion-module-only file, no MODEL connected",
    "appearance encoder folder without config.json",
    "appearance encoder config.json that is not JSON",
    "appearance encoder folder given the ControlNet",
    "ControlNet folder given the appearance encoder",
    "appearance encoder file given as temporal checkpoint",
]

EXPECTED = {  # a phrase each message must contain (besides the file name and a fix)
    "pickle_that_runs_code.ckpt": "could run arbitrary code",
    "torch.save zip whose pickle runs code": "could run arbitrary code",
    "appearance_encoder/*.bin whose pickle runs code": "could run arbitrary code",
    "zero-byte .safetensors (temporal)": "is empty (0 bytes)",
    "truncated .safetensors (temporal, half the file)": "truncated or corrupt",
    "truncated .safetensors (appearance encoder, header only)": "truncated or corrupt",
    "zero-byte .safetensors (DensePose ControlNet)": "is empty (0 bytes)",
    ".safetensors with a hostile header length (2^60 bytes)": "truncated or corrupt",
    "truncated .ckpt (zip cut in half)": "truncated",
    "text file renamed .ckpt": "is not a PyTorch checkpoint",
    "SDXL UNet as temporal checkpoint": "SDXL",
    "SDXL UNet as appearance encoder": "SDXL",
    "SDXL UNet as DensePose ControlNet": "SDXL",
    "SD1.5 LoRA as temporal checkpoint": "LoRA",
    "SD1.5 LoRA as appearance encoder": "LoRA",
    "SD1.5 LoRA as DensePose ControlNet": "LoRA",
    "random tensor file as temporal checkpoint": "no motion-module keys",
    "random tensor file as appearance encoder": "not an SD1.5-type diffusers UNet",
    "random tensor file as DensePose ControlNet": "not a diffusers ControlNet",
    "motion-module file with missing keys": "lacks 10 of the 560 motion-module tensors",
    "motion-module-only file, no MODEL connected": "holds only motion modules",
    "appearance encoder folder without config.json": "is not an appearance-encoder folder listed",
    "appearance encoder config.json that is not JSON": "is not an appearance-encoder folder listed",
    "appearance encoder folder given the ControlNet": "is not an appearance-encoder folder listed",
    "ControlNet folder given the appearance encoder": "is not a DensePose ControlNet folder listed",
    "appearance encoder file given as temporal checkpoint": "no motion-module keys",
}


@pytest.fixture(scope="module")
def loader_node(tiny32_files, monkeypatch_module):
    """The pack's LoadMagicAnimate with ``models/magicanimate`` pointing at the session's tiny files."""
    import folder_paths

    load_pack()
    exts = set(folder_paths.folder_names_and_paths.get("magicanimate", ([], set()))[1]) or {".ckpt", ".safetensors"}
    monkeypatch_module.setitem(folder_paths.folder_names_and_paths, "magicanimate", ([str(tiny32_files.root)], exts))
    return pack_nodes()["MagicAnimateLoader"]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.mark.parametrize("kind", BAD_FILES)
def test_bad_file_is_refused_by_name_and_left_untouched(kind, tiny32_files, loader_node, tmp_path, bad_input_log):
    from magicanimate.errors import CheckpointError  # noqa: F401  (the pack's own copy is checked below)

    bad_dir = tiny32_files.root / f"bad_{BAD_FILES.index(kind)}"
    bad_dir.mkdir(exist_ok=True)
    marker = tmp_path / "pwned"
    slot, path = make_bad(kind, bad_dir, tiny32_files, marker)
    name = str(path.relative_to(tiny32_files.root))
    args = dict(temporal_checkpoint="temporal_attention.ckpt", appearance_encoder="appearance_encoder",
                densepose_controlnet="densepose_controlnet", weight_dtype="fp32")
    args[{"temporal": "temporal_checkpoint", "appearance": "appearance_encoder",
          "controlnet": "densepose_controlnet"}[slot]] = name
    before, listing = _tree_digest(path), _listing(tiny32_files.root)
    try:
        with pytest.raises(Exception) as info:
            loader_node.execute(**args)
        err = info.value
        pack_errors = load_pack().magicanimate.errors
        assert isinstance(err, pack_errors.CheckpointError), f"{type(err).__name__}: {err}"
        message = str(err)
        bad_input_log("file", kind, message)
        assert path.name in message, message
        assert EXPECTED[kind] in message, message
        assert FIX_WORDS.search(message), f"no fix in: {message}"
        assert "\n" not in message and len(message) < 600, message
        assert not marker.exists(), "unpickling ran code"
        assert _tree_digest(path) == before, "the file was modified"
        assert _listing(tiny32_files.root) == listing, "files were created or removed"
    finally:
        shutil.rmtree(bad_dir, ignore_errors=True)


def test_pack_never_unpickles_with_code_execution():
    """Static guard: every torch.load in the pack passes weights_only=True; no pickle/np.load(allow_pickle) calls."""
    repo = Path(load_pack().__file__).parent
    # The pack's own files: hidden folders (.git, the virtual environments .venv*, CI's extracted .ci-comfyui/) hold
    # other projects' code.
    sources = [p for p in repo.glob("**/*.py") if not p.is_relative_to(repo / "tests")
               and not any(part.startswith(".") for part in p.relative_to(repo).parts) and "bench" not in p.parts]
    assert sources
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in call.group(1), f"{path}: {call.group(0)}"
        assert not re.search(r"\bpickle\.(load|loads|Unpickler)\b", text), path
        assert "allow_pickle=True" not in text, path
        assert "load_torch_file(" not in text or "safe_load=True" in text, path


def test_loader_reads_config_json_without_evaluating_it(tiny32_files, loader_node, tmp_path):
    """config.json is data: a config with Python-looking payloads is read as JSON only and the model loads."""
    folder = tiny32_files.root / "appearance_encoder_odd_config"
    shutil.copytree(tiny32_files.appearance, folder)
    try:
        cfg = json.loads((folder / "config.json").read_text())
        cfg["_class_name"] = "__import__('os').system('touch " + str(tmp_path / "pwned") + "')"
        (folder / "config.json").write_text(json.dumps(cfg))
        loader_node.execute(temporal_checkpoint="temporal_attention.ckpt",
                            appearance_encoder=folder.name, densepose_controlnet="densepose_controlnet",
                            weight_dtype="fp32")
        assert not (tmp_path / "pwned").exists()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
