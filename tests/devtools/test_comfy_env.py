"""devtools.comfy_env: the in-process ComfyUI is the right version, on CPU, from the scratch copy; the tools find
the ComfyUI the pack is installed in."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

from devtools import comfy_env

REPO = Path(__file__).resolve().parents[2]
PACK_DIR_NAME = "ComfyUI-MagicAnimate"


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


def test_tools_find_the_comfyui_the_pack_is_installed_in(comfy_dir, tmp_path, monkeypatch):
    """scripts.animate and scripts.write_random_models (same search) find ComfyUI/custom_nodes/<pack>/../.."""
    from scripts import animate
    comfy = tmp_path / "ComfyUI"
    for name in ("main.py", "nodes.py"):
        (comfy / name).parent.mkdir(parents=True, exist_ok=True)
        (comfy / name).write_text("")
    (comfy / "comfy").mkdir()
    (comfy / "custom_nodes").mkdir()
    (comfy / "custom_nodes" / PACK_DIR_NAME).symlink_to(REPO, target_is_directory=True)
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.setattr(comfy_env, "REPO_UNRESOLVED", comfy / "custom_nodes" / PACK_DIR_NAME)
    assert animate.locate_comfyui(None) == (comfy.resolve(), "the ComfyUI this pack is installed in")

    proc = subprocess.run([sys.executable, "-m", "scripts.write_random_models", "--out",
                           str(tmp_path / "models"), "--comfyui", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode != 0 and "not a ComfyUI tree" in proc.stderr, proc.stdout + proc.stderr
    assert not (tmp_path / "models").exists()
