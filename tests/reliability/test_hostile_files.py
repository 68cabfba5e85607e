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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import TINY32

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


# Writers: each takes (root, files, marker) and returns the path the user would pick in the loader.
Writer = Callable[[Path, Any, Path], Path]


def _pickle_that_runs_code(root: Path, files, marker: Path) -> Path:
    path = root / "temporal_pwn.ckpt"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": {"conv_in.weight": _Pwn(marker)}}, fh, protocol=2)
    return path


def _zip_pickle_that_runs_code(root: Path, files, marker: Path) -> Path:
    path = root / "temporal_pwn_zip.pt"
    torch.save({"conv_in.weight": torch.zeros(1), "payload": _Pwn(marker)}, path)
    return path


def _encoder_bin_that_runs_code(root: Path, files, marker: Path) -> Path:
    folder = root / "appearance_encoder_pwn"
    folder.mkdir()
    shutil.copy2(files.appearance / "config.json", folder / "config.json")
    torch.save({"conv_in.weight": _Pwn(marker)}, folder / "diffusion_pytorch_model.bin")
    return folder


def _file_with(name: str, data: Callable[[], bytes]) -> Writer:
    """A single file ``name`` holding ``data()``."""
    def write(root: Path, files, marker: Path) -> Path:
        (root / name).write_bytes(data())
        return root / name
    return write


def _temporal_cut_in_half(name: str, fmt: str) -> Writer:
    """A good tiny temporal checkpoint in format ``fmt``, cut to its first half."""
    def write(root: Path, files, marker: Path) -> Path:
        good = root / f"good_{name}"
        write_temporal_checkpoint(good, TINY32, seed=0, **({"fmt": fmt} if fmt != "ckpt" else {}))
        data = good.read_bytes()
        good.unlink()
        (root / name).write_bytes(data[: len(data) // 2])
        return root / name
    return write


def _network_folder(slot: str, name: str, change: Callable[[Path], None]) -> Writer:
    """A copy of the good ``slot`` folder ("appearance" or "controlnet") named ``name``, then ``change(folder)``."""
    def write(root: Path, files, marker: Path) -> Path:
        folder = _copy_folder(getattr(files, slot), root / name)
        change(folder)
        return folder
    return write


def _weights_in_folder(slot: str, name: str, state_dict: Callable[[], dict]) -> Writer:
    """The good ``slot`` folder's config.json beside ``state_dict()`` as its weights."""
    def write(root: Path, files, marker: Path) -> Path:
        folder = root / name
        folder.mkdir()
        shutil.copy2(getattr(files, slot) / "config.json", folder / "config.json")
        save_file(state_dict(), str(folder / "diffusion_pytorch_model.safetensors"))
        return folder
    return write


def _weights_file(name: str, state_dict: Callable[[], dict]) -> Writer:
    def write(root: Path, files, marker: Path) -> Path:
        save_file(state_dict(), str(root / name))
        return root / name
    return write


def _motion_modules_missing_ten(root: Path, files, marker: Path) -> Path:
    sd = torch.load(files.motion_only, weights_only=True)
    for key in sorted(sd)[:10]:
        del sd[key]
    torch.save(sd, root / "mm_partial.ckpt")
    return root / "mm_partial.ckpt"


def _copied_file(name: str, source: Callable[[Any], Path]) -> Writer:
    def write(root: Path, files, marker: Path) -> Path:
        shutil.copy2(source(files), root / name)
        return root / name
    return write


def _cut_weights(folder: Path, keep: int) -> None:
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:keep])


def _random_tensors() -> dict[str, torch.Tensor]:
    return {"weight": torch.randn(64, 64), "bias": torch.randn(64)}


def _random_tensor() -> dict[str, torch.Tensor]:
    return {"weight": torch.randn(64, 64)}


@dataclass(frozen=True)
class BadFile:
    """One bad entry: which loader input gets it, how it is written, a phrase the refusal must contain."""

    kind: str
    slot: str  # "temporal", "appearance" or "controlnet"
    write: Writer
    expected: str


_HEADER_BOMB = (2 ** 60).to_bytes(8, "little") + b"{}" + b" " * 6
_SDXL, _LORA = "SDXL", "LoRA"

BAD_FILES = [
    BadFile("pickle_that_runs_code.ckpt", "temporal", _pickle_that_runs_code, "could run arbitrary code"),
    BadFile("torch.save zip whose pickle runs code", "temporal", _zip_pickle_that_runs_code,
            "could run arbitrary code"),
    BadFile("appearance_encoder/*.bin whose pickle runs code", "appearance", _encoder_bin_that_runs_code,
            "could run arbitrary code"),
    BadFile("zero-byte .safetensors (temporal)", "temporal",
            _file_with("temporal_empty.safetensors", lambda: b""), "is empty (0 bytes)"),
    BadFile("truncated .safetensors (temporal, half the file)", "temporal",
            _temporal_cut_in_half("temporal_truncated.safetensors", "safetensors"), "truncated or corrupt"),
    BadFile("truncated .safetensors (appearance encoder, header only)", "appearance",
            _network_folder("appearance", "appearance_encoder_truncated", lambda f: _cut_weights(f, 4096)),
            "truncated or corrupt"),
    BadFile("zero-byte .safetensors (DensePose ControlNet)", "controlnet",
            _network_folder("controlnet", "densepose_controlnet_empty", lambda f: _cut_weights(f, 0)),
            "is empty (0 bytes)"),
    BadFile(".safetensors with a hostile header length (2^60 bytes)", "temporal",
            _file_with("temporal_header_bomb.safetensors", lambda: _HEADER_BOMB), "truncated or corrupt"),
    BadFile("truncated .ckpt (zip cut in half)", "temporal", _temporal_cut_in_half("temporal_truncated.ckpt", "ckpt"),
            "truncated"),
    BadFile("text file renamed .ckpt", "temporal",
            _file_with("temporal_text.ckpt", lambda: b"<html>404 Not Found</html>\n"), "is not a PyTorch checkpoint"),
    BadFile("SDXL UNet as temporal checkpoint", "temporal", _weights_file("sdxl_unet.safetensors", _sdxl_unet_sd),
            _SDXL),
    BadFile("SDXL UNet as appearance encoder", "appearance",
            _weights_in_folder("appearance", "appearance_encoder_sdxl", _sdxl_unet_sd), _SDXL),
    BadFile("SDXL UNet as DensePose ControlNet", "controlnet",
            _weights_in_folder("controlnet", "densepose_controlnet_sdxl", _sdxl_unet_sd), _SDXL),
    BadFile("SD1.5 LoRA as temporal checkpoint", "temporal",
            _weights_file("my_style_lora.safetensors", _sd15_lora_sd), _LORA),
    BadFile("SD1.5 LoRA as appearance encoder", "appearance",
            _weights_in_folder("appearance", "appearance_encoder_lora", _sd15_lora_sd), _LORA),
    BadFile("SD1.5 LoRA as DensePose ControlNet", "controlnet",
            _weights_in_folder("controlnet", "densepose_controlnet_lora", _sd15_lora_sd), _LORA),
    BadFile("random tensor file as temporal checkpoint", "temporal",
            _weights_file("random_tensors.safetensors", _random_tensors), "no motion-module keys"),
    BadFile("random tensor file as appearance encoder", "appearance",
            _weights_in_folder("appearance", "appearance_encoder_random", _random_tensor),
            "not an SD1.5-type diffusers UNet"),
    BadFile("random tensor file as DensePose ControlNet", "controlnet",
            _weights_in_folder("controlnet", "densepose_controlnet_random", _random_tensor),
            "not a diffusers ControlNet"),
    BadFile("motion-module file with missing keys", "temporal", _motion_modules_missing_ten,
            "lacks 10 of the 560 motion-module tensors"),
    BadFile("motion-module-only file, no MODEL connected", "temporal",
            _copied_file("mm_only.ckpt", lambda files: files.motion_only), "holds only motion modules"),
    BadFile("appearance encoder folder without config.json", "appearance",
            _network_folder("appearance", "appearance_encoder_no_config", lambda f: (f / "config.json").unlink()),
            "is not an appearance-encoder folder listed"),
    BadFile("appearance encoder config.json that is not JSON", "appearance",
            _network_folder("appearance", "appearance_encoder_bad_json",
                            lambda f: (f / "config.json").write_text("{ this is not json")),
            "is not an appearance-encoder folder listed"),
    BadFile("appearance encoder folder given the ControlNet", "appearance",
            lambda root, files, marker: _copy_folder(files.controlnet, root / "appearance_encoder_is_controlnet"),
            "is not an appearance-encoder folder listed"),
    BadFile("ControlNet folder given the appearance encoder", "controlnet",
            lambda root, files, marker: _copy_folder(files.appearance, root / "densepose_controlnet_is_encoder"),
            "is not a DensePose ControlNet folder listed"),
    BadFile("appearance encoder file given as temporal checkpoint", "temporal",
            _copied_file("appearance_as_temporal.safetensors",
                         lambda files: files.appearance / "diffusion_pytorch_model.safetensors"),
            "no motion-module keys"),
]


@pytest.fixture(scope="module")
def loader_node(tiny_files, monkeypatch_module):
    """The pack's LoadMagicAnimate with ``models/magicanimate`` pointing at the session's tiny files."""
    import folder_paths

    load_pack()
    exts = set(folder_paths.folder_names_and_paths.get("magicanimate", ([], set()))[1]) or {".ckpt", ".safetensors"}
    monkeypatch_module.setitem(folder_paths.folder_names_and_paths, "magicanimate", ([str(tiny_files.root)], exts))
    return pack_nodes()["MagicAnimateLoader"]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.mark.parametrize("bad", BAD_FILES, ids=[b.kind for b in BAD_FILES])
def test_bad_file_is_refused_by_name_and_left_untouched(bad, tiny_files, loader_node, tmp_path, bad_input_log):
    from magicanimate.errors import CheckpointError  # noqa: F401  (the pack's own copy is checked below)

    bad_dir = tiny_files.root / f"bad_{BAD_FILES.index(bad)}"
    bad_dir.mkdir(exist_ok=True)
    marker = tmp_path / "pwned"
    path = bad.write(bad_dir, tiny_files, marker)
    name = str(path.relative_to(tiny_files.root))
    args = dict(temporal_checkpoint="temporal_attention.ckpt", appearance_encoder="appearance_encoder",
                densepose_controlnet="densepose_controlnet", weight_dtype="fp32")
    args[{"temporal": "temporal_checkpoint", "appearance": "appearance_encoder",
          "controlnet": "densepose_controlnet"}[bad.slot]] = name
    before, listing = _tree_digest(path), _listing(tiny_files.root)
    try:
        with pytest.raises(Exception) as info:
            loader_node.execute(**args)
        err = info.value
        pack_errors = load_pack().magicanimate.errors
        assert isinstance(err, pack_errors.CheckpointError), f"{type(err).__name__}: {err}"
        message = str(err)
        bad_input_log("file", bad.kind, message)
        assert path.name in message, message
        assert bad.expected in message, message
        assert FIX_WORDS.search(message), f"no fix in: {message}"
        assert "\n" not in message and len(message) < 600, message
        assert not marker.exists(), "unpickling ran code"
        assert _tree_digest(path) == before, "the file was modified"
        assert _listing(tiny_files.root) == listing, "files were created or removed"
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


def test_loader_reads_config_json_without_evaluating_it(tiny_files, loader_node, tmp_path):
    """config.json is data: a config with Python-looking payloads is read as JSON only and the model loads."""
    folder = tiny_files.root / "appearance_encoder_odd_config"
    shutil.copytree(tiny_files.appearance, folder)
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
