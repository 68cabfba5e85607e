"""End to end through a real headless ComfyUI server.

A fresh copy of the ComfyUI tree runs ``main.py --cpu`` on a free loopback port with only this pack enabled
(symlinked into ``custom_nodes/``), models from a temporary models dir (random weights: full-size SD1.5 checkpoint
and VAE, tiny MagicAnimate networks with 768-wide cross-attention, see ``devtools/random_weights/sd15_files.py``) and
temporary input/output dirs (``tests/server_harness.py``). The tests talk to it over HTTP only (urllib; results by
polling ``/history``).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import pytest
from server_harness import NODE_IDS, PACK_FOLDER, REPO_ROOT, Server, comfyui_server, saved_files, shared_model_tree

import devtools.workflows as bw
from devtools.random_weights.sd15_files import MODEL_FILES

WORKFLOW = REPO_ROOT / "workflows" / "api" / "magicanimate_basic.api.json"

RUN_TIMEOUT_S = 900  # a 2-core machine shared with other jobs can be several times slower than idle


PEAK_RSS_LIMIT_BYTES = 14 * 2**30


@pytest.fixture(scope="module")
def models_dir() -> Path:
    return shared_model_tree()


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory):
    with comfyui_server(tmp_path_factory.mktemp("server"), models_dir=models_dir) as srv:
        yield srv


# ---------------------------------------------------------------------------------------------------------------------
# The workflow
# ---------------------------------------------------------------------------------------------------------------------


def _load_workflow() -> dict:
    assert WORKFLOW.is_file(), f"the shipped workflow {WORKFLOW} is missing"
    return json.loads(WORKFLOW.read_text())


def _nodes_of(prompt: dict, class_type: str) -> list[str]:
    return [nid for nid, node in prompt.items() if node.get("class_type") == class_type]


def _small_prompt(prompt: dict | None = None) -> dict:
    """The workflow (default: the basic one) at 64x64 and 2 steps (everything else as shipped)."""
    prompt = _load_workflow() if prompt is None else prompt
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


def _check_video(server: Server, entry: dict, frames_expected: int = 42) -> None:
    import av

    videos = [f for f in saved_files(entry) if f["filename"].endswith(".mp4")]
    assert len(videos) == 1, entry["outputs"]
    path = server.output_dir / videos[0].get("subfolder", "") / videos[0]["filename"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == pytest.approx(25.0)
        frames = [frame for frame in container.decode(stream)]
    assert len(frames) == frames_expected
    assert {(f.width, f.height) for f in frames} == {(64, 64)}


@pytest.mark.slow
def test_templates_and_node_help_pages_are_served(server):
    """The frontend's Templates dialog lists exactly the UI workflows (with thumbnails); the node help panel finds a
    page per node at /extensions/<pack folder>/docs/<node id>.md (frontend 1.32.9's NodeHelpService)."""
    status, listed = server.get("/workflow_templates")
    assert status == 200 and sorted(listed.get(PACK_FOLDER, [])) == sorted(bw.GRAPHS), listed
    for name in bw.GRAPHS:
        status, ui = server.get(f"/api/workflow_templates/{PACK_FOLDER}/{name}.json")
        assert status == 200 and "nodes" in ui and "links" in ui, (name, status)
        status, _ = server.get(f"/api/workflow_templates/{PACK_FOLDER}/{name}.jpg")
        assert status == 200, name
    status, info = server.get("/object_info")
    for node_id in NODE_IDS:
        status, page = server.get(f"/extensions/{PACK_FOLDER}/docs/{node_id}.md")
        assert status == 200 and page.startswith(f"# {info[node_id]['display_name']}\n"), (node_id, status, page)


@pytest.mark.slow
def test_from_video_workflow_runs_with_a_densepose_video_in_place_of_the_estimator(server):
    """Our part of ``magicanimate_from_video``: the DensePose Estimator (comfyui_controlnet_aux, not installed here)
    replaced by the DensePose video it would produce; the ordinary video still gives the fps."""
    shutil.copy2(server.input_dir / bw.DEMO_VIDEO, server.input_dir / bw.FROM_VIDEO_INPUT)
    api = json.loads(bw.api_path("magicanimate_from_video").read_text(encoding="utf-8"))
    estimators = _nodes_of(api, "DensePosePreprocessor")
    assert len(estimators) == 1 and api[estimators[0]]["inputs"]["cmap"] == "Viridis (MagicAnimate)", api
    prompt = _small_prompt(bw.with_densepose_video(api))
    pose = _nodes_of(prompt, "MagicAnimatePoseControl")[0]
    assert prompt[pose]["inputs"]["pose_frames"] == [estimators[0], 0]  # the estimator's place, now the video
    status, body = _queue(server, prompt)
    assert status == 200 and not body.get("node_errors"), f"{status} {body}\nlog:\n{server.log_tail()}"
    entry = server.wait_for_history(body["prompt_id"], RUN_TIMEOUT_S)
    assert entry["status"]["status_str"] == "success", (
        f"run failed: {json.dumps(entry['status'].get('messages'), indent=1)[-6000:]}\nlog:\n{server.log_tail()}")
    _check_video(server, entry)


@pytest.mark.slow
def test_shipped_workflow_renders_the_example_video(server):
    import av

    prompt = _small_prompt()
    # The largest seed the Temporal Sample widget allows (its "randomize" can pick one above 2**63, which a signed
    # 64-bit conversion anywhere on the way would refuse with "Overflow when unpacking long long").
    for nid in _nodes_of(prompt, "MagicAnimateTemporalSample"):
        prompt[nid]["inputs"]["seed"] = 2**64 - 1
    started = time.monotonic()
    status, body = _queue(server, prompt)
    assert status == 200 and not body.get("node_errors"), f"{status} {body}\nlog:\n{server.log_tail()}"
    entry = server.wait_for_history(body["prompt_id"], RUN_TIMEOUT_S)
    elapsed = time.monotonic() - started
    run_status = entry["status"]
    assert run_status["status_str"] == "success", (
        f"run failed: {json.dumps(run_status.get('messages'), indent=1)[-6000:]}\nlog:\n{server.log_tail()}")
    print(f"\n[e2e] workflow ran in {elapsed:.1f} s")

    # ComfyUI 0.33's Load CLIP reports SD1.5's own text encoder file (transformers' CLIPTextModel, as the hub ships
    # it) without the pooled output's projection, which SD1.5 never uses: the only "clip missing" line allowed.
    log = server.log_path.read_text(errors="replace").replace("clip missing: ['text_projection.weight']", "")
    for marker in ("unet missing", "clip missing", "Missing VAE keys"):
        assert marker not in log, f"'{marker}' in the server log: the random SD1.5 files do not match ComfyUI"

    videos = [f for f in saved_files(entry) if f["filename"].endswith(".mp4")]
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

