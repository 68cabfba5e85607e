"""Locked down, through a real server: what an attacker can POST to ``/prompt`` and ``/upload/image``.

One module-scoped server (``tests/server_harness.py``, ``main.py --cpu``) with a small models dir: the tiny MagicAnimate
files reached through a symlink the user placed in ``models/magicanimate/``, a checkpoint holding a NaN, a compressed
zip "bomb", a VAE folder (in neither dropdown) and two symlink loops; a secrets folder sits outside the models dir.
No SD1.5 files: graphs that need a CLIP only have to pass or fail validation (a placeholder checkpoint is listed).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import threading
import time
import uuid
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from reliability.malformed_entries import check_left_out, write_malformed
from server_harness import Server, comfyui_server

from devtools.proc_memory import reset_peak

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 300
SECRET = f"SECRET-{uuid.uuid4().hex}"
BOMB_DECLARED = 512 * 2**20      # bytes the compressed record inflates to
LINKED = "linked"                # the symlink in models/magicanimate pointing at the tiny files


@pytest.fixture(scope="module")
def layout(tmp_path_factory, tiny_files) -> dict:
    base = tmp_path_factory.mktemp("lockdown")
    models = base / "models"
    folder = models / "magicanimate"
    folder.mkdir(parents=True)
    (models / "checkpoints").mkdir()
    (models / "checkpoints" / "placeholder.safetensors").write_bytes(b"")  # listed for validation; never loaded
    os.symlink(tiny_files.root, folder / LINKED)
    sd = torch.load(tiny_files.temporal, weights_only=True)
    sd = sd.get("state_dict", sd)
    bad_key = sorted(k for k in sd if ".motion_modules." in k)[0]
    sd[bad_key] = sd[bad_key].clone()
    sd[bad_key].view(-1)[0] = float("nan")
    torch.save(sd, folder / "nan_temporal.ckpt")
    write_bomb(folder / "bomb.ckpt", base)
    vae = folder / "some_vae"
    vae.mkdir()
    (vae / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "block_out_channels": [128]}))
    (vae / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    os.symlink(".", folder / "loop_self")
    os.symlink("..", folder / "loop_parent")
    write_malformed(folder)
    secret = base / "secret"
    secret.mkdir()
    (secret / "secret.ckpt").write_bytes(f"c{SECRET}\n{SECRET}\n(tR.".encode())
    (secret / "notes.txt").write_text(f"api_key={SECRET}\n")
    shutil.copytree(tiny_files.appearance, secret / "encoder")
    (secret / "encoder" / "config.json").write_text(json.dumps({"_class_name": SECRET}))
    return dict(base=base, models=models, folder=folder, secret=secret, nan_key=bad_key)


def write_bomb(path: Path, tmp: Path) -> None:
    """A torch zip checkpoint whose tensor record is deflated (BOMB_DECLARED bytes of zeros in ~0.5 MB), plus a stored
    16 MB random record so that "twice the file size" is well above the server's RSS noise."""
    plain = tmp / "plain.pt"
    torch.save({"w": torch.empty(BOMB_DECLARED // 4)}, plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            with src.open(info) as fin, dst.open(info.filename, "w", force_zip64=True) as fout:
                shutil.copyfileobj(fin, fout, 16 << 20)
        dst.writestr(zipfile.ZipInfo("padding/random"), os.urandom(16 << 20), compress_type=zipfile.ZIP_STORED)
    plain.unlink()


@pytest.fixture(scope="module")
def server(tmp_path_factory, layout):
    work = tmp_path_factory.mktemp("lockdown_server")
    with comfyui_server(work / "run", models_dir=layout["models"], label="lockdown", startup_timeout=300) as srv:
        yield srv
        log = srv.log_path.read_text(errors="replace")
        assert SECRET not in log, "the server log quotes the secrets file"


# ---------------------------------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------------------------------


def loader_prompt(**inputs) -> dict:
    values = dict(temporal_checkpoint=f"{LINKED}/temporal_attention.ckpt",
                  appearance_encoder=f"{LINKED}/appearance_encoder",
                  densepose_controlnet=f"{LINKED}/densepose_controlnet", weight_dtype="fp32")
    values.update(inputs)
    return {"1": {"class_type": "MagicAnimateLoader", "inputs": values},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


def full_prompt(**changes) -> dict:
    """All five nodes wired (validation only: the placeholder checkpoint cannot load); ``changes``: {id: {input: v}}."""
    prompt = loader_prompt()
    del prompt["2"]
    prompt.update({
        "2": {"class_type": "LoadImage", "inputs": {"image": "monalisa.png"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}},
        "4": {"class_type": "MagicAnimateAppearanceEncode", "inputs": {
            "appearance_encoder": ["1", 1], "vae": ["3", 0], "image": ["2", 0], "fit": "stretch", "width": 64,
            "height": 64}},
        "5": {"class_type": "MagicAnimatePoseControl", "inputs": {
            "control_net": ["1", 2], "pose_frames": ["2", 0], "strength": 1.0, "start_percent": 0.0,
            "end_percent": 1.0, "fit": "stretch"}},
        "6": {"class_type": "MagicAnimateSegmentFuse", "inputs": {
            "length": 16, "overlap": 4, "closed_loop": True, "fuse": "average"}},
        "7": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "placeholder.safetensors"}},
        "8": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["7", 1]}},
        "9": {"class_type": "MagicAnimateTemporalSample", "inputs": {
            "model": ["1", 0], "appearance": ["4", 0], "pose": ["5", 0], "positive": ["8", 0], "negative": ["8", 0],
            "seed": 1, "steps": 2, "cfg": 7.5, "sampler_name": "reference_ddim", "scheduler": "normal",
            "denoise": 1.0, "noise_mode": "tiled", "segments": ["6", 0]}},
        "10": {"class_type": "PreviewAny", "inputs": {"source": ["9", 0]}},
    })
    for node, inputs in changes.items():
        prompt[node]["inputs"].update(inputs)
    return prompt


def post_prompt(server: Server, prompt: dict) -> tuple[int, dict, str]:
    """(status, body, raw body text) of POST /prompt; NaN/Infinity are sent as JSON literals (what aiohttp accepts)."""
    import urllib.error
    import urllib.request

    data = json.dumps({"prompt": prompt, "client_id": str(uuid.uuid4())}).encode()
    req = urllib.request.Request(server.base + "/prompt", data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, raw = resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read().decode(errors="replace")
    return status, json.loads(raw), raw


def node_messages(body: dict, node: str) -> list[str]:
    errors = body.get("node_errors", {}).get(node, {}).get("errors", [])
    return [f"{e.get('message')}: {e.get('details')}" for e in errors]


def run_to_error(server: Server, prompt: dict) -> dict:
    status, body, _ = post_prompt(server, prompt)
    assert status == 200 and not body.get("node_errors"), body
    entry = server.wait_for_history(body["prompt_id"], RUN_TIMEOUT_S)
    assert entry["status"]["status_str"] == "error", json.dumps(entry["status"])[-2000:]
    assert not entry.get("outputs"), entry["outputs"]
    return dict(entry["status"]["messages"])["execution_error"]


def peak_rss_reset(server: Server) -> int:
    """Reset the server's peak RSS (VmHWM) and return its current RSS."""
    return reset_peak(server.proc.pid)


def output_files(server: Server) -> list[Path]:
    return [p for p in server.output_dir.rglob("*") if p.is_file()]


# ---------------------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------------------


def test_system_stats_answers_within_a_second_while_the_folder_holds_two_symlink_loops(server):
    done = threading.Event()
    listing_times = []

    def hammer():
        while not done.is_set():
            started = time.monotonic()
            status, _ = server.get("/object_info/MagicAnimateLoader", timeout=60)
            listing_times.append(time.monotonic() - started)
            assert status == 200

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        waits = []
        for _ in range(10):
            started = time.monotonic()
            status, stats = server.get("/system_stats", timeout=30)
            waits.append(time.monotonic() - started)
            assert status == 200 and "system" in stats
            time.sleep(0.1)
    finally:
        done.set()
        thread.join(timeout=60)
    print(f"\n[lockdown] /system_stats s: {[round(w, 3) for w in waits]}; /object_info s: "
          f"{[round(t, 3) for t in listing_times[:10]]}")
    assert max(waits) < 1.0, waits
    assert listing_times and max(listing_times) < 1.0, listing_times


def test_dropdowns_list_only_the_right_networks(server):
    status, info = server.get("/object_info/MagicAnimateLoader")
    assert status == 200
    required = info["MagicAnimateLoader"]["input"]["required"]

    def options(name):
        spec = required[name]
        return spec[1]["options"] if spec[0] == "COMBO" else spec[0]

    assert options("appearance_encoder") == [f"{LINKED}/appearance_encoder"]
    assert options("densepose_controlnet") == [f"{LINKED}/densepose_controlnet"]
    temporal = options("temporal_checkpoint")
    assert f"{LINKED}/temporal_attention.ckpt" in temporal and "nan_temporal.ckpt" in temporal
    assert not any(n.startswith("loop_self/") for n in temporal)


def test_malformed_entries_are_left_out_with_one_log_line_each_and_hide_nothing(server):
    status, everything = server.get("/object_info", timeout=60)
    assert status == 200 and "MagicAnimateTemporalSample" in everything
    listed = check_left_out(everything, server.log_path.read_text(errors="replace"))
    assert f"{LINKED}/appearance_encoder" in listed and f"{LINKED}/temporal_attention.ckpt" in listed


def test_model_names_outside_the_folder_are_refused_alike_and_the_secret_never_shows(server, layout, bad_input_log):
    secret, folder = layout["secret"], layout["folder"]
    names = {
        "absolute path to a file that exists": str(secret / "secret.ckpt"),
        "absolute path to a file that does not": str(secret / "missing.ckpt"),
        "../ path to a file that exists": os.path.relpath(secret / "notes.txt", folder),
        "../ path to a file that does not": os.path.relpath(secret / "missing.txt", folder),
        "../ path to a model folder outside": os.path.relpath(secret / "encoder", folder),
        "a listed name with ../ added": f"{LINKED}/../{LINKED}/temporal_attention.ckpt",
    }
    for input_name in ("temporal_checkpoint", "appearance_encoder", "densepose_controlnet"):
        seen = set()
        for label, value in names.items():
            status, body, raw = post_prompt(server, loader_prompt(**{input_name: value}))
            assert status == 400, (input_name, label, raw[:500])
            assert SECRET not in raw and str(layout["base"]) not in raw, raw
            messages = node_messages(body, "1")
            assert messages and all(input_name in m for m in messages), messages
            assert body["node_errors"]["1"]["class_type"] == "MagicAnimateLoader"
            seen.add(messages[0].replace(json.dumps(value), ""))
            if input_name == "temporal_checkpoint":   # the other two inputs get the same message
                bad_input_log("server", f"Load MagicAnimate model name = {label}", messages[0], outcome="HTTP 400")
        assert len(seen) == 1, seen   # one message, whether the path exists elsewhere or not


@pytest.mark.parametrize("node, name, value", [
    ("1", "weight_dtype", "fp8"),
    ("4", "fit", "zoom"),
    ("5", "strength", math.nan),
    ("5", "end_percent", math.inf),
    ("6", "fuse", "median"),
    ("9", "cfg", math.nan),
    ("9", "denoise", math.nan),
    ("9", "sampler_name", "no_such_sampler"),
    ("9", "scheduler", "no_such_scheduler"),
    ("9", "noise_mode", "pink"),
])
def test_bad_widget_values_are_an_http_400_naming_node_and_input(server, node, name, value, bad_input_log):
    prompt = full_prompt(**{node: {name: value}})
    before = output_files(server)
    status, body, raw = post_prompt(server, prompt)
    assert status == 400, raw[:1000]
    assert set(body["node_errors"]) == {node}, body["node_errors"]
    messages = node_messages(body, node)
    display = {"1": "Load MagicAnimate (Animate Anyone-style)", "4": "MagicAnimate Appearance Encode",
               "5": "Pose Control (DensePose video)", "6": "MagicAnimate Segment Fuse",
               "9": "Temporal Sample (dance video)"}[node]
    assert any(f"{display}: {name} " in m for m in messages), messages
    assert output_files(server) == before
    bad_input_log("server", f"{prompt[node]['class_type']} {name} = {json.dumps(value)}", messages[0],
                  outcome="HTTP 400")


def test_nan_weights_give_a_clear_error_and_no_output(server, layout, bad_input_log):
    error = run_to_error(server, loader_prompt(temporal_checkpoint="nan_temporal.ckpt"))
    message = error["exception_message"]
    assert error["node_type"] == "MagicAnimateLoader" and error["exception_type"].endswith("CheckpointError")
    assert "nan_temporal.ckpt" in message and layout["nan_key"] in message and "NaN or Inf" in message, message
    assert output_files(server) == []
    bad_input_log("server", "temporal checkpoint holding a NaN weight", message,
                  outcome="execution_error (CheckpointError in MagicAnimateLoader)")


def test_compressed_record_checkpoint_is_refused_within_twice_its_size(server, layout, bad_input_log):
    size = (layout["folder"] / "bomb.ckpt").stat().st_size
    rss_before = peak_rss_reset(server)
    error = run_to_error(server, loader_prompt(temporal_checkpoint="bomb.ckpt"))
    peak = server.peak_rss_bytes()
    growth = peak - rss_before
    print(f"\n[lockdown] bomb.ckpt {size / 2**20:.1f} MiB (declares {BOMB_DECLARED >> 20} MiB): peak RSS growth "
          f"{growth / 2**20:.1f} MiB")
    assert "compressed records" in error["exception_message"], error
    assert growth < 2 * size, (growth, size)
    bad_input_log("server", "temporal checkpoint with a compressed zip record (0.5 GB of zeros in 17 MB)",
                  error["exception_message"], outcome="execution_error (CheckpointError in MagicAnimateLoader)")


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(v for x in range(width) for v in ((x * 7) % 256, 90, 160))
    rows = b"".join(b"\0" + row for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_uploaded_image_of_extreme_aspect_ratio_is_cropped_within_bounded_memory(server, bad_input_log):
    import urllib.request

    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"strip.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + _png(20000, 1) + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(server.base + "/upload/image", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        uploaded = json.loads(resp.read())["name"]
    prompt = full_prompt(**{"2": {"image": uploaded}, "4": {"fit": "crop", "width": 64, "height": 64}})
    prompt = {k: prompt[k] for k in ("1", "2", "3", "4")}
    prompt["10"] = {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}}
    run_to_warm = loader_prompt()   # load the models first, so the measured run only fits and encodes the image
    status, warm, _ = post_prompt(server, run_to_warm)
    assert status == 200
    server.wait_for_history(warm["prompt_id"], RUN_TIMEOUT_S)
    rss_before = peak_rss_reset(server)
    status, queued, raw = post_prompt(server, prompt)
    assert status == 200, raw[:1000]
    entry = server.wait_for_history(queued["prompt_id"], RUN_TIMEOUT_S)
    growth = server.peak_rss_bytes() - rss_before
    print(f"\n[lockdown] 20000x1 image, fit=crop to 64x64: peak RSS growth {growth / 2**20:.1f} MiB")
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-2000:]
    assert growth < 200 * 2**20, growth   # scaling first would take ~1.2 GB (20000*64 x 64 pixels, float32)
    bad_input_log("server", "uploaded 20000x1 reference image, fit=crop to 64x64",
                  "runs: only the kept region is resampled (peak RSS growth < 200 MB)", outcome="handled")
