"""``python -m scripts.get_models`` against a stand-in hub on 127.0.0.1 (``HF_ENDPOINT``) serving files in the real
repositories' layouts: the plan, the fetch, an interrupted download resumed, wrong files refused and fetched again,
no network, a short disk, ``--convert``. That ``scripts/animate.py`` runs on what was fetched is the README quick
start's test (``tests/test_quickstart.py``: set-up, fetch from this stand-in hub, then the demo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from stand_in_hub import StandInHub

from magicanimate import model_layout as layout
from scripts.get_models import human

REPO = Path(__file__).resolve().parents[2]
TEMPORAL_KEY = f"{layout.MAGICANIMATE_REPO}/temporal_attention/temporal_attention.ckpt"
TEXT_ENCODER_KEY = "stable-diffusion-v1-5/stable-diffusion-v1-5/text_encoder/model.safetensors"


def _relative(model: layout.ModelFile, download: layout.Download) -> str:
    """Where ``download`` ends up under a ``--models-dir``."""
    leaf = Path(download.path).name
    return f"{model.folder}/{model.name}/{leaf}" if model.is_dir else f"{model.folder}/{model.name}"


def _fake_files(root: Path) -> dict[str, Path]:
    """Random bytes in the hub's layout: the large files over 10 MB (the hub gives them a sha256 etag)."""
    files = {}
    for i, model in enumerate(layout.FETCHED):
        for d in model.downloads:
            path = root / d.repo / d.path
            path.parent.mkdir(parents=True, exist_ok=True)
            size = 300 + i if d.path.endswith(".json") else (12 * 2**20 + 1000 * i)
            path.write_bytes(os.urandom(size))
            files[f"{d.repo}/{d.path}"] = path
    return files


@pytest.fixture()
def hub(tmp_path):
    served = StandInHub(_fake_files(tmp_path / "hub"))
    yield served
    served.close()


def _command(comfy_dir: Path, models: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "scripts.get_models", "--comfyui", str(comfy_dir), "--models-dir", str(models),
            *extra]


def _env(endpoint: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_XET": "1"}


def _fetch(comfy_dir, models, hub_or_endpoint, tmp_path, *extra) -> subprocess.CompletedProcess:
    endpoint = getattr(hub_or_endpoint, "endpoint", hub_or_endpoint)
    return subprocess.run(_command(comfy_dir, models, *extra), cwd=REPO, env=_env(endpoint, tmp_path),
                          capture_output=True, text=True, timeout=300)


def _gets(hub: StandInHub, key: str) -> list[str | None]:
    return [rng for method, k, rng in hub.requests if method == "GET" and k == key]


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_fetch_prints_the_plan_then_places_each_file_checked(comfy_dir, tmp_path, hub):
    models = tmp_path / "models"
    done = _fetch(comfy_dir, models, hub, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    total = sum(p.stat().st_size for p in hub.files.values())
    assert f"To download: {len(hub.files)} of {len(hub.files)} files" in out and "Free disk space at" in out
    for model in layout.FETCHED:
        for d in model.downloads:
            placed = models / _relative(model, d)
            assert placed.read_bytes() == hub.files[f"{d.repo}/{d.path}"].read_bytes(), placed
            assert str(placed) in out and f"{d.repo}/{d.path}" in out
    assert f"{human(total)} (all files: {human(total)})" in out  # the plan's total
    assert not (models / ".magicanimate-download").exists()  # staging removed once all is in place
    again = _fetch(comfy_dir, models, hub, tmp_path)
    assert again.returncode == 0 and f"To download: 0 of {len(hub.files)} files" in again.stdout
    file_gets = [key for method, key, _ in hub.requests if method == "GET" and key in hub.files]
    assert sorted(file_gets) == sorted(hub.files)  # each file fetched once, none on the second run


def test_the_checkpoint_is_fetched_only_on_request(comfy_dir, tmp_path):
    """The animation templates need SD1.5's text encoder alone; ``--with-checkpoint`` adds the 4.3 GB checkpoint of
    the text-to-image template to the plan."""
    files = _fake_files(tmp_path / "hub")
    (d,) = layout.SD15_CHECKPOINT.downloads
    files[f"{d.repo}/{d.path}"] = tmp_path / "hub" / "checkpoint.safetensors"
    files[f"{d.repo}/{d.path}"].write_bytes(os.urandom(2000))
    served = StandInHub(files)
    try:
        plain = _fetch(comfy_dir, tmp_path / "models", served, tmp_path, "--dry-run")
        more = _fetch(comfy_dir, tmp_path / "models", served, tmp_path, "--dry-run", "--with-checkpoint")
    finally:
        served.close()
    assert plain.returncode == 0 and more.returncode == 0, plain.stdout + plain.stderr + more.stderr
    target = str(tmp_path / "models" / layout.SD15_CHECKPOINT.folder / layout.SD15_CHECKPOINT.name)
    fetched = len(files) - 1
    assert target not in plain.stdout and f"To download: {fetched} of {fetched} files" in plain.stdout
    assert target in more.stdout and f"To download: {fetched + 1} of {fetched + 1} files" in more.stdout
    assert str(tmp_path / "models" / layout.SD15_TEXT_ENCODER.folder / layout.SD15_TEXT_ENCODER.name) in plain.stdout
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("*.safetensors"))


def test_an_interrupted_download_resumes_where_it_stopped(comfy_dir, tmp_path, hub):
    models = tmp_path / "models"
    hub.hold[TEMPORAL_KEY] = 10 * 2**20 + 2**19  # huggingface_hub writes what it receives in 10 MiB pieces
    # Ctrl-C as a user's terminal delivers it: a test runner started in the background (``cmd &`` without job
    # control) ignores SIGINT, every child would inherit that and Python would then never raise KeyboardInterrupt.
    proc = subprocess.Popen(_command(comfy_dir, models), cwd=REPO, env=_env(hub.endpoint, tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while TEMPORAL_KEY not in hub.sent and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    while time.monotonic() < deadline and proc.poll() is None and not any(  # the client wrote its 10 MiB piece
            f.stat().st_size >= 10 * 2**20 for f in (models / ".magicanimate-download").rglob("*.part")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    hub.release()
    assert proc.returncode == 130, out + err
    assert "run this command again to resume" in err
    assert not (models / layout.MAGICANIMATE_FOLDER / layout.TEMPORAL.name).exists()
    assert all(".download" in name for name in _files_under(models / layout.MAGICANIMATE_FOLDER)), \
        "nothing incomplete where the pack lists files"
    done = _fetch(comfy_dir, models, hub, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming after" in done.stdout
    first, second = _gets(hub, TEMPORAL_KEY)
    assert first is None and second is not None and int(second[6:].split("-")[0]) > 0, (first, second)
    placed = models / layout.MAGICANIMATE_FOLDER / layout.TEMPORAL.name
    assert placed.read_bytes() == hub.files[TEMPORAL_KEY].read_bytes()


def test_a_file_of_the_wrong_hash_or_size_is_refused_and_fetched_again(comfy_dir, tmp_path, hub):
    models = tmp_path / "models"
    hub.corrupt_once.add(TEXT_ENCODER_KEY)
    vae = models / layout.SD_VAE.folder / layout.SD_VAE.name
    vae.parent.mkdir(parents=True)
    vae.write_bytes(b"an older, truncated download")
    done = _fetch(comfy_dir, models, hub, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "refused text_encoder/model.safetensors: a wrong sha256; fetching it again" in done.stdout
    assert len(_gets(hub, TEXT_ENCODER_KEY)) == 2
    encoder = models / layout.SD15_TEXT_ENCODER.folder / layout.SD15_TEXT_ENCODER.name
    assert encoder.read_bytes() == hub.files[TEXT_ENCODER_KEY].read_bytes()
    assert "wrong size or hash: fetched again" in done.stdout
    (d,) = layout.SD_VAE.downloads
    assert vae.read_bytes() == hub.files[f"{d.repo}/{d.path}"].read_bytes()


def test_a_failing_hub_is_told_apart_from_no_network(comfy_dir, tmp_path, hub):
    hub.refuse_get.add(TEMPORAL_KEY)
    models = tmp_path / "models"
    done = _fetch(comfy_dir, models, hub, tmp_path)
    assert done.returncode == 5, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{TEMPORAL_KEY}: the hub answered") and "Cannot reach" not in done.stderr, last
    assert not (models / layout.MAGICANIMATE_FOLDER / layout.TEMPORAL.name).exists()


def test_no_network_is_one_sentence_and_a_failure_with_nothing_written(comfy_dir, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    models = tmp_path / "models"
    done = _fetch(comfy_dir, models, endpoint, tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.strip().startswith(f"Cannot reach {endpoint}") and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr and _files_under(models) == []


def test_a_short_disk_is_refused_before_anything_is_fetched(tmp_path, monkeypatch):
    from scripts import get_models

    items = [get_models.Item(m, d, tmp_path / _relative(m, d), tmp_path / m.folder, size=2 * 2**30)
             for m in layout.FETCHED for d in m.downloads]
    monkeypatch.setattr(get_models.shutil, "disk_usage",
                        lambda path: SimpleNamespace(total=100 * 2**30, used=97 * 2**30, free=3 * 2**30))
    with pytest.raises(get_models.FetchError) as refused:
        get_models.check_disk(items)
    assert refused.value.status == get_models.EXIT_DISK and "Not enough disk space" in str(refused.value)
    for item in items[1:]:
        item.state = "present"
    get_models.check_disk(items)  # one 2 GiB file fits in 3 GiB


def _networks(folder: Path, temporal: str, appearance: str, controlnet: str):
    import torch

    from devtools.random_weights.model_files import TINY
    from devtools.random_weights.networks import Networks
    from magicanimate.comfy_adapter.loaders import (
        load_appearance_encoder,
        load_densepose_controlnet,
        load_temporal_model,
    )

    fp16 = torch.float16
    return Networks(TINY, fp16, load_temporal_model(str(folder / temporal), fp16),
                    load_appearance_encoder(str(folder / appearance), fp16),
                    load_densepose_controlnet(str(folder / controlnet), fp16))


@pytest.mark.slow
def test_convert_keeps_only_fp16_safetensors_that_animate_like_the_originals_cast_to_fp16(comfy_dir, tmp_path):
    import torch
    from safetensors import safe_open

    from bench.gpu_parts import Video
    from devtools.random_weights.model_files import TINY, write_model_set
    from scripts.fp16_conversion import CONVERTED, FOLDER_WEIGHTS

    released = tmp_path / "released"
    write_model_set(released, TINY)  # fp32, the temporal checkpoint a pickle, as released
    files = _fake_files(tmp_path / "hub")
    for model in layout.MAGICANIMATE_FILES:
        for d in model.downloads:
            files[f"{d.repo}/{d.path}"] = released / _relative(model, d).split("/", 1)[1]
    served = StandInHub(files)
    try:
        models = tmp_path / "models"
        done = _fetch(comfy_dir, models, served, tmp_path, "--convert")
    finally:
        served.close()
    assert done.returncode == 0, done.stdout + done.stderr
    folder = models / layout.MAGICANIMATE_FOLDER
    assert sorted(p.name for p in folder.iterdir()) == sorted(CONVERTED.values())  # no fp32 original, no pickle
    assert not (models / ".magicanimate-download").exists()
    weights = [folder / CONVERTED[layout.TEMPORAL.name]] + [folder / CONVERTED[m.name] / FOLDER_WEIGHTS
                                                             for m in (layout.APPEARANCE, layout.CONTROLNET)]
    for path in weights:
        with safe_open(str(path), framework="pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}, path
    assert weights[0].stat().st_size < 0.55 * (released / layout.TEMPORAL.name).stat().st_size
    original = Video(_networks(released, layout.TEMPORAL.name, layout.APPEARANCE.name, layout.CONTROLNET.name), 16, 64)
    converted = Video(_networks(folder, *(CONVERTED[m.name] for m in layout.MAGICANIMATE_FILES)), 16, 64)
    assert torch.equal(original.sample(1), converted.sample(1))  # fp16 on the CPU is slow: one step


@pytest.mark.slow
def test_the_text_encoder_alone_encodes_prompts_as_the_checkpoints_clip():
    """The fetch takes SD1.5's text_encoder/ (0.5 GB, for core Load CLIP) instead of the 4.3 GB checkpoint: the same
    CLIP weights in the two layouts, loaded by core's two loaders, give the same conditioning."""
    import comfy.sd
    import torch
    from server_harness import shared_model_tree

    tree = shared_model_tree()
    checkpoint = comfy.sd.load_checkpoint_guess_config(
        str(tree / layout.SD15_CHECKPOINT.folder / layout.SD15_CHECKPOINT.name), output_vae=False)[1]
    alone = comfy.sd.load_clip([str(tree / layout.SD15_TEXT_ENCODER.folder / layout.SD15_TEXT_ENCODER.name)],
                               clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
    assert type(alone.cond_stage_model) is type(checkpoint.cond_stage_model)
    for text in ("", "a woman dancing, best quality"):
        a, pooled_a = checkpoint.encode_from_tokens(checkpoint.tokenize(text), return_pooled=True)
        b, pooled_b = alone.encode_from_tokens(alone.tokenize(text), return_pooled=True)
        assert a.shape == (1, 77, 768) and a.abs().sum() > 0
        assert torch.equal(a, b) and torch.equal(pooled_a, pooled_b), text
