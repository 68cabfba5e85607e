"""The test harness itself: the in-process ComfyUI is the right version, on CPU, from the scratch copy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3])


def test_comfyui_version_and_cpu_device(comfy_dir: Path) -> None:
    spec = importlib.util.spec_from_file_location("_ma_comfyui_version", comfy_dir / "comfyui_version.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert _version_tuple(module.__version__) >= (0, 3, 75)

    import comfy.model_management

    assert Path(comfy.model_management.__file__).resolve().is_relative_to(comfy_dir.resolve())
    assert comfy.model_management.get_torch_device() == torch.device("cpu")


def test_copy_has_no_extra_model_paths_yaml(comfy_dir: Path) -> None:
    assert (comfy_dir / "main.py").is_file()
    assert not (comfy_dir / "extra_model_paths.yaml").exists()


def test_bootstrap_is_idempotent(comfy_dir: Path) -> None:
    from devtools.comfy_env import bootstrap_inprocess

    bootstrap_inprocess(comfy_dir)  # second call: no-op, no error
