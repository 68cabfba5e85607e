"""End to end through a real headless ComfyUI server (spec comfyui-integration.md §8).

A fresh copy of the ComfyUI tree runs ``main.py --cpu`` on a free loopback port with only this pack enabled
(symlinked into ``custom_nodes/``), models from a temporary models dir (random weights: full-size SD1.5 checkpoint
and VAE, tiny MagicAnimate networks with 768-wide cross-attention, see ``fixtures/sd15_files.py``) and temporary
input/output dirs. The tests talk to it over HTTP only (urllib; results by polling ``/history``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from comfy_env import prepare_comfyui_copy
from fixtures.sd15_files import MODEL_FILES, write_model_tree

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = REPO_ROOT / "workflows" / "magicanimate_basic.api.json"
EXAMPLE_VIDEO = REPO_ROOT / "example_inputs" / "running.mp4"
EXAMPLE_IMAGE = REPO_ROOT / "example_inputs" / "monalisa.png"
PACK_FOLDER = "ComfyUI-MagicAnimate"

NODE_IDS = ("MagicAnimateLoader", "MagicAnimateAppearanceEncode", "MagicAnimatePoseControl",
            "MagicAnimateSegmentFuse", "MagicAnimateTemporalSample")

STARTUP_TIMEOUT_S = 90
RUN_TIMEOUT_S = 300
PEAK_RSS_LIMIT_BYTES = 14 * 2**30


# ---------------------------------------------------------------------------------------------------------------------
# Server harness
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Server:
    base: str
    proc: subprocess.Popen
    log_path: Path
    input_dir: Path
    output_dir: Path

    def log_tail(self, chars: int = 8000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"<no server log: {exc}>"

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 30.0) -> tuple[int, object]:
        """(HTTP status, decoded JSON body) of one request; HTTP errors are returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def get(self, path: str, **kw) -> tuple[int, object]:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: dict, **kw) -> tuple[int, object]:
        return self.request("POST", path, body, **kw)

    def peak_rss_bytes(self) -> int | None:
        """VmHWM of the server process (Linux), or None."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with code {server.proc.returncode} during start-up; log:\n"
                               f"{server.log_tail()}")
        try:
            status, _ = server.get("/queue", timeout=2)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"ComfyUI did not answer on {server.base} within {timeout:.0f} s; log:\n{server.log_tail()}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    try:
        write_model_tree(root)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)  # ~2.4 GB; pytest would keep it with its last 3 base temps


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("server")
    comfy = prepare_comfyui_copy(work / "ComfyUI")
    (comfy / "custom_nodes" / PACK_FOLDER).symlink_to(REPO_ROOT, target_is_directory=True)
    input_dir, output_dir = work / "input", work / "output"
    input_dir.mkdir()
    output_dir.mkdir()
    shutil.copy2(EXAMPLE_VIDEO, input_dir / EXAMPLE_VIDEO.name)
    shutil.copy2(EXAMPLE_IMAGE, input_dir / EXAMPLE_IMAGE.name)
    yaml_path = work / "extra_model_paths.yaml"
    yaml_path.write_text(
        "magicanimate_e2e:\n"
        f"  base_path: {json.dumps(str(models_dir))}\n"
        "  checkpoints: checkpoints\n"
        "  vae: vae\n"
        "  magicanimate: magicanimate\n"
    )
    port = _free_port()
    cmd = [
        sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
        "--database-url", "sqlite:///:memory:",
        "--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK_FOLDER, "--disable-api-nodes",
        "--extra-model-paths-config", str(yaml_path),
        "--input-directory", str(input_dir), "--output-directory", str(output_dir),
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")  # no __pycache__ in the repo
    log_path = work / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=comfy, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    srv = Server(f"http://127.0.0.1:{port}", proc, log_path, input_dir, output_dir)
    try:
        _wait_until_up(srv, STARTUP_TIMEOUT_S)
        yield srv
    finally:
        peak = srv.peak_rss_bytes()
        _stop(proc)
        if peak is not None:
            print(f"\n[e2e] ComfyUI server peak RSS: {peak / 2**30:.2f} GiB")


# ---------------------------------------------------------------------------------------------------------------------
# The workflow
# ---------------------------------------------------------------------------------------------------------------------


def _load_workflow() -> dict:
    assert WORKFLOW.is_file(), f"the shipped workflow {WORKFLOW} is missing"
    return json.loads(WORKFLOW.read_text())


def _nodes_of(prompt: dict, class_type: str) -> list[str]:
    return [nid for nid, node in prompt.items() if node.get("class_type") == class_type]


def _small_prompt() -> dict:
    """The workflow at 64x64 and 2 steps (everything else as shipped)."""
    prompt = _load_workflow()
    encoders = _nodes_of(prompt, "MagicAnimateAppearanceEncode")
    samplers = _nodes_of(prompt, "MagicAnimateTemporalSample")
    classes = sorted(n["class_type"] for n in prompt.values())
    assert encoders and samplers, f"workflow lacks the MagicAnimate nodes: {classes}"
    for nid in encoders:
        prompt[nid]["inputs"].update(width=64, height=64)
    for nid in samplers:
        prompt[nid]["inputs"]["steps"] = 2
    return prompt


def _queue(server: Server, prompt: dict) -> tuple[int, dict]:
    status, body = server.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})
    assert isinstance(body, dict), (status, body)
    return status, body


def _wait_for_history(server: Server, prompt_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"ComfyUI died (exit {server.proc.returncode}) while running the prompt; log:\n"
                        f"{server.log_tail()}")
        status, body = server.get(f"/history/{prompt_id}")
        if status == 200 and isinstance(body, dict) and prompt_id in body:
            entry = body[prompt_id]
            if entry.get("status", {}).get("completed") or entry.get("status", {}).get("status_str") == "error":
                return entry
        time.sleep(1.0)
    pytest.fail(f"prompt {prompt_id} did not finish within {timeout:.0f} s; log:\n{server.log_tail()}")


def _saved_files(entry: dict) -> list[dict]:
    files = []
    for ui in entry.get("outputs", {}).values():
        for items in ui.values():
            if isinstance(items, list):
                files += [it for it in items if isinstance(it, dict) and "filename" in it]
    return files


# ---------------------------------------------------------------------------------------------------------------------
# Tests (file order matters for d: it checks the server after the run)
# ---------------------------------------------------------------------------------------------------------------------


def _input_specs(info: dict) -> dict[str, list]:
    specs = {}
    for section in ("required", "optional"):
        specs.update(info.get("input", {}).get(section, {}))
    return specs


def _combo_options(spec: list) -> list:
    if isinstance(spec[0], list):  # V1 style: [[options...], {...}]
        return spec[0]
    assert spec[0] == "COMBO", spec
    return spec[1]["options"]


@pytest.mark.slow
def test_object_info_lists_the_nodes_with_tooltips_and_model_files(server):
    status, info = server.get("/object_info")
    assert status == 200
    missing = [n for n in NODE_IDS if n not in info]
    assert not missing, f"nodes not registered: {missing}; log:\n{server.log_tail()}"
    for node_id in NODE_IDS:
        node = info[node_id]
        assert node["category"] == "MagicAnimate", node_id
        specs = _input_specs(node)
        assert specs, node_id
        for name, spec in specs.items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            assert options.get("tooltip"), f"{node_id}.{name} has no tooltip: {spec}"

    loader = _input_specs(info["MagicAnimateLoader"])
    assert "temporal_attention.ckpt" in _combo_options(loader["temporal_checkpoint"])
    assert "appearance_encoder" in _combo_options(loader["appearance_encoder"])
    assert "densepose_controlnet" in _combo_options(loader["densepose_controlnet"])
    # the SD1.5 files are visible to the core loaders through the same extra_model_paths.yaml
    ckpts = _combo_options(_input_specs(info["CheckpointLoaderSimple"])["ckpt_name"])
    assert Path(MODEL_FILES["checkpoint"]).name in ckpts
    assert Path(MODEL_FILES["vae"]).name in _combo_options(_input_specs(info["VAELoader"])["vae_name"])


@pytest.mark.slow
def test_wrong_socket_type_is_rejected_with_node_errors(server):
    prompt = _small_prompt()
    sampler = _nodes_of(prompt, "MagicAnimateTemporalSample")[0]
    prompt["9001"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    prompt[sampler]["inputs"]["appearance"] = ["9001", 0]
    status, body = _queue(server, prompt)
    assert status == 400, body
    errors = body["node_errors"][sampler]["errors"]
    assert body["node_errors"][sampler]["class_type"] == "MagicAnimateTemporalSample"
    assert any(e["type"] == "return_type_mismatch" and e["extra_info"]["input_name"] == "appearance" for e in errors), \
        errors


@pytest.mark.slow
def test_missing_required_input_is_rejected_with_node_errors(server):
    prompt = _small_prompt()
    sampler = _nodes_of(prompt, "MagicAnimateTemporalSample")[0]
    del prompt[sampler]["inputs"]["pose"]
    status, body = _queue(server, prompt)
    assert status == 400, body
    errors = body["node_errors"][sampler]["errors"]
    assert any(e["type"] == "required_input_missing" and e["extra_info"]["input_name"] == "pose" for e in errors), \
        errors


@pytest.mark.slow
def test_shipped_workflow_renders_the_example_video(server):
    import av

    prompt = _small_prompt()
    started = time.monotonic()
    status, body = _queue(server, prompt)
    assert status == 200 and not body.get("node_errors"), f"{status} {body}\nlog:\n{server.log_tail()}"
    entry = _wait_for_history(server, body["prompt_id"], RUN_TIMEOUT_S)
    elapsed = time.monotonic() - started
    run_status = entry["status"]
    assert run_status["status_str"] == "success", (
        f"run failed: {json.dumps(run_status.get('messages'), indent=1)[-6000:]}\nlog:\n{server.log_tail()}")
    print(f"\n[e2e] workflow ran in {elapsed:.1f} s")

    log = server.log_path.read_text(errors="replace")
    for marker in ("unet missing", "clip missing", "Missing VAE keys"):
        assert marker not in log, f"'{marker}' in the server log: the random SD1.5 files do not match ComfyUI"

    videos = [f for f in _saved_files(entry) if f["filename"].endswith(".mp4")]
    assert len(videos) == 1, entry["outputs"]
    saved = videos[0]
    assert saved.get("type") == "output", saved
    path = server.output_dir / saved.get("subfolder", "") / saved["filename"]
    assert path.is_file(), path
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == pytest.approx(25.0)
        frames = [frame for frame in container.decode(stream)]
    assert len(frames) == 42
    assert {(f.width, f.height) for f in frames} == {(64, 64)}


@pytest.mark.slow
def test_server_stays_responsive_after_the_run(server):
    status, queue = server.get("/queue")
    assert status == 200 and queue["queue_running"] == [] and queue["queue_pending"] == [], queue
    status, stats = server.get("/system_stats")
    assert status == 200 and "system" in stats
    assert server.proc.poll() is None
    peak = server.peak_rss_bytes()
    if peak is not None:
        print(f"\n[e2e] ComfyUI server peak RSS so far: {peak / 2**30:.2f} GiB")
        assert peak < PEAK_RSS_LIMIT_BYTES, f"server peak RSS {peak / 2**30:.2f} GiB"

