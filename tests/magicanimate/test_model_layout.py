"""``magicanimate.model_layout``: plain Python (no torch, no ComfyUI), one download source and destination per file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from magicanimate import model_layout as ml

REPO = Path(__file__).resolve().parents[2]


def test_every_file_has_a_download_source_and_a_destination():
    for f in ml.FILES:
        assert f.downloads and all(u.startswith(f"{ml.HF}/") for u in f.urls), f
        assert f.destination.startswith(f"ComfyUI/models/{f.folder}/{f.name}")
    for f in ml.MAGICANIMATE_FILES:
        assert f.folder == ml.MAGICANIMATE_FOLDER and ml.BY_KIND[f.kind] is f
        assert all(d.repo == ml.MAGICANIMATE_REPO for d in f.downloads)
        where = f"ComfyUI/models/{f.folder}/" + (f"{f.name}/" if f.is_dir else "")
        assert f.hint.endswith(f"{where} (or run `{ml.FETCH_COMMAND}` in the pack's folder: it fetches every model "
                               "file)")
    assert set(ml.FETCHED) <= set(ml.FILES) and ml.SD15_CHECKPOINT not in ml.FETCHED  # only text-to-image needs it


def test_config_kinds():
    assert ml.config_kind({"_class_name": "ControlNetModel"}) == "controlnet"
    assert ml.config_kind({"down_block_types": [], "cross_attention_dim": 768}) == "appearance"
    assert ml.config_kind({"_class_name": "AutoencoderKL"}) is None and ml.config_kind([1]) is None


def test_it_loads_by_file_path_without_torch_or_comfyui():
    code = ("import importlib.util, sys; p = sys.argv[1]; s = importlib.util.spec_from_file_location('ml', p); "
            "m = importlib.util.module_from_spec(s); sys.modules['ml'] = m; s.loader.exec_module(m); "
            "assert m.TEMPORAL.name == 'temporal_attention.ckpt'; "
            "assert not {'torch', 'comfy', 'folder_paths'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code, str(REPO / "magicanimate" / "model_layout.py")], check=True,
                   timeout=60)
