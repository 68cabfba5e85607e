"""A long-running, shared ComfyUI server: interruption, repeated runs, caching and a mixed queue.

One module-scoped server (``tests/server_harness.py``: ``main.py --cpu``, random full-size SD1.5 checkpoint and VAE,
tiny MagicAnimate networks), driven over HTTP and its websocket. Tests run in file order:

1. a plain SD1.5 KSampler run (CheckpointLoaderSimple's MODEL) in the fresh server, saved with SaveLatent;
2. ten consecutive MagicAnimate runs: RSS (and VRAM, when the server has a GPU) settles at most 2% above run 1 (the
   median of runs 8..10) and no run ends more than 5% above it (a leak keeps growing; one run that ends higher or
   lower by the C heap's slack and is back at the level by the next is no leak). The server runs with glibc's mmap
   threshold fixed, so that RSS follows live memory;
3. POST /interrupt during the appearance encoding, the sampling and the decode (timed from websocket messages);
4. the plain KSampler run again: bit-identical latent to the fresh server's;
5. caching: a changed seed re-runs only the sampler and what follows; a changed pose strength also re-runs Pose
   Control but not the loaders or Appearance Encode; an identical prompt runs nothing;
6. a soak: 20 prompts queued at once, valid and invalid mixed; valid ones finish with correct videos, each invalid one
   is reported (HTTP 400 with node_errors, or an execution_error carrying the pack's message), the server stays up.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import time
from pathlib import Path

import pytest
from reliability.server_client import (
    RUN_TIMEOUT_S,
    events,
    output_file,
    queue,
    rss_bytes,
    run_and_interrupt,
    run_ok,
    vram_bytes,
)
from server_harness import REPO_ROOT, Server, comfyui_server, shared_model_tree

from devtools.proc_memory import FIXED_MALLOC

pytestmark = pytest.mark.slow

WORKFLOW = REPO_ROOT / "workflows" / "api" / "magicanimate_basic.api.json"
FRAMES = 16            # pose frames taken from the demo video (one 16-frame window)
RSS_TOLERANCE = 0.02       # the level runs 8..10 settle at, above run 1
RSS_EXCURSION = 0.05       # any single run above run 1
RESULTS: dict = {}     # shared between the ordered tests of this module

# "1" is the templates' Load CLIP (SD1.5's text encoder); the plain SD1.5 prompt puts its checkpoint there.
IDS = dict(ckpt="1", clip="1", image="2", loader="3", vae="4", video="5", components="6", positive="7", negative="8",
           appearance="9", pose="10", segments="11", sampler="12", decode="13", create="14", save="15")


# ---------------------------------------------------------------------------------------------------------------------
# Server and prompts
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_models(tmp_path_factory, tiny_files) -> Path:
    """A second models root holding broken MagicAnimate files (listed by the loader next to the good ones)."""
    root = tmp_path_factory.mktemp("hostile_models")
    folder = root / "magicanimate"
    folder.mkdir()
    import pickle

    class Pwn:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {root / 'pwned'}",))

    with open(folder / "evil.ckpt", "wb") as fh:
        pickle.dump({"state_dict": {"x": Pwn()}}, fh, protocol=2)
    data = (tiny_files.appearance / "diffusion_pytorch_model.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 3])
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, hostile_models):
    models = shared_model_tree()
    work = tmp_path_factory.mktemp("reliability_server")
    yaml_path = work / "hostile_paths.yaml"
    yaml_path.write_text(f"hostile:\n  base_path: {json.dumps(str(hostile_models))}\n  magicanimate: magicanimate\n")
    with comfyui_server(work / "run", models_dir=models, extra_args=["--extra-model-paths-config", str(yaml_path)],
                        label="reliability", env=FIXED_MALLOC) as srv:  # RSS follows what is live
        yield srv
        log = srv.log_path.read_text(errors="replace")
        assert "memory leak" not in log.lower(), "ComfyUI reported a model memory leak"
        assert not (hostile_models / "pwned").exists(), "a pickle ran code"


def animate_prompt(seed: int = 1, **changes) -> dict:
    """The shipped workflow at 64x64, 2 steps, on the first 16 pose frames; ``changes``: {node key: {input: value}}."""
    prompt = json.loads(WORKFLOW.read_text())
    prompt[IDS["appearance"]]["inputs"].update(width=64, height=64)
    prompt[IDS["sampler"]]["inputs"].update(steps=2, seed=seed)
    prompt["20"] = {"class_type": "ImageFromBatch",
                    "inputs": {"image": [IDS["components"], 0], "batch_index": 0, "length": FRAMES}}
    prompt[IDS["pose"]]["inputs"]["pose_frames"] = ["20", 0]
    prompt[IDS["save"]]["inputs"]["filename_prefix"] = f"reliability/seed{seed}"
    for key, inputs in changes.items():
        prompt[IDS.get(key, key)]["inputs"].update(inputs)
    return prompt


def plain_prompt(tag: int) -> dict:
    """SD1.5 text-to-image with core nodes; ``tag`` only scales an all-zero latent, so every tag re-runs KSampler on
    the same numbers (ComfyUI would otherwise answer from its cache)."""
    return {
        IDS["ckpt"]: {"class_type": "CheckpointLoaderSimple",
                      "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "p1": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat", "clip": [IDS["ckpt"], 1]}},
        "p2": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": [IDS["ckpt"], 1]}},
        "p3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "p4": {"class_type": "LatentMultiply", "inputs": {"samples": ["p3", 0], "multiplier": float(tag)}},
        "p5": {"class_type": "KSampler", "inputs": {
            "model": [IDS["ckpt"], 0], "seed": 7, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["p1", 0], "negative": ["p2", 0], "latent_image": ["p4", 0],
            "denoise": 1.0}},
        "p6": {"class_type": "SaveLatent", "inputs": {"samples": ["p5", 0], "filename_prefix": f"plain/tag{tag}"}},
    }


def check_video(path: Path) -> None:
    import av

    with av.open(str(path)) as container:
        frames = list(container.decode(container.streams.video[0]))
    assert len(frames) == FRAMES and {(f.width, f.height) for f in frames} == {(64, 64)}


def plain_latent(server: Server, tag: int):
    from safetensors.torch import load_file

    entry = run_ok(server, plain_prompt(tag))
    assert "p5" not in events(entry).get("execution_cached", {}).get("nodes", []), "KSampler did not run"
    return load_file(str(output_file(server, entry, ".latent")))["latent_tensor"]


# ---------------------------------------------------------------------------------------------------------------------
# 1-2: fresh plain run, ten MagicAnimate runs
# ---------------------------------------------------------------------------------------------------------------------


def test_plain_ksampler_in_the_fresh_server(server):
    RESULTS["plain_fresh"] = plain_latent(server, 1)
    assert RESULTS["plain_fresh"].shape == (1, 4, 8, 8)


def test_ten_runs_return_ram_and_vram_to_their_level_after_the_first(server):
    rss, vram, took = [], [], []
    for i in range(10):
        started = time.monotonic()
        entry = run_ok(server, animate_prompt(seed=100 + i))
        took.append(time.monotonic() - started)
        check_video(output_file(server, entry, ".mp4"))
        time.sleep(0.5)   # let the prompt worker finish its post-prompt clean-up
        rss.append(rss_bytes(server))
        vram.append(vram_bytes(server))
    RESULTS["ten_runs"] = {"rss_gib": [round(r / 2**30, 3) for r in rss], "seconds": [round(t, 1) for t in took],
                           "vram": vram}
    print(f"\n[reliability] ten runs: RSS GiB {RESULTS['ten_runs']['rss_gib']}, s {RESULTS['ten_runs']['seconds']}, "
          f"VRAM {vram}")
    assert_no_leak("RSS", rss)
    if vram[0] is not None:
        assert_no_leak("VRAM", vram)


def assert_no_leak(what: str, levels: list[int]) -> None:
    """Memory after each of ten runs: it settles near run 1's level and never strays far from it.

    A leak of a few MB per run lifts every later run, so the median of the last three catches it. The heap's slack
    does not: under glibc's default threshold CI saw run 2 end 2.4% below run 1 once and 2.4% above it once, with run 3
    back at run 1's level to within 0.01% both times, and a local run saw runs 9 and 10 end 1.3% and 4.2% above.
    """
    growth = [(v - levels[0]) / max(levels[0], 1) for v in levels[1:]]
    settled = sorted(growth[-3:])[1]
    assert settled <= RSS_TOLERANCE, f"{what} after runs 8..10 settles {settled:.2%} above run 1: {growth}"
    assert max(growth) <= RSS_EXCURSION, f"{what} after one run {max(growth):.2%} above run 1: {growth}"


# ---------------------------------------------------------------------------------------------------------------------
# 3-4: interruption, then the plain model is untouched
# ---------------------------------------------------------------------------------------------------------------------

INTERRUPTS = {
    # phase: (prompt changes that make the phase re-run, trigger(type, data), nodes that must not have finished)
    "appearance encoding": ({"appearance": {"fit": "pad"}},
                            lambda t, d: t == "executing" and d.get("node") == IDS["appearance"],
                            {IDS["sampler"], IDS["decode"], IDS["save"]}),
    "sampling": ({"sampler": {"seed": 201}},
                 lambda t, d: t == "progress" and d.get("node") == IDS["sampler"] and d.get("value", 0) >= 1,
                 {IDS["sampler"], IDS["decode"], IDS["save"]}),
    "decode": ({"sampler": {"seed": 202}},
               lambda t, d: t == "executing" and d.get("node") == IDS["decode"],
               {IDS["save"]}),
}


@pytest.mark.parametrize("phase", list(INTERRUPTS))
def test_interrupt_then_the_same_models_run_the_next_prompt(server, phase):
    changes, trigger, unfinished = INTERRUPTS[phase]
    kind, payload, sent = asyncio.run(run_and_interrupt(server, animate_prompt(**changes), trigger, RUN_TIMEOUT_S))
    assert sent, f"the {phase} phase was never seen"
    assert kind == "execution_interrupted", (kind, payload)
    assert not unfinished & set(payload.get("executed", [])), payload
    RESULTS.setdefault("interrupted_at", {})[phase] = f"{payload.get('node_type')} ({payload.get('node_id')})"
    print(f"\n[reliability] interrupt during {phase}: stopped in {RESULTS['interrupted_at'][phase]}")
    # the next prompt runs with the same (cached) models: only what changed executes
    entry = run_ok(server, animate_prompt(seed=300 + list(INTERRUPTS).index(phase)))
    check_video(output_file(server, entry, ".mp4"))
    assert IDS["loader"] in events(entry)["execution_cached"]["nodes"]


def test_plain_ksampler_after_magicanimate_is_bit_identical_to_the_fresh_server(server):
    latent = plain_latent(server, 2)
    assert latent.dtype == RESULTS["plain_fresh"].dtype
    assert (latent == RESULTS["plain_fresh"]).all(), (latent - RESULTS["plain_fresh"]).abs().max()


# ---------------------------------------------------------------------------------------------------------------------
# 5: caching through the nodes
# ---------------------------------------------------------------------------------------------------------------------


def test_changing_one_input_reruns_only_what_depends_on_it(server):
    base = animate_prompt(seed=400)
    run_ok(server, base)
    upstream = {IDS[k] for k in ("ckpt", "image", "loader", "vae", "video", "components", "positive", "negative",
                                 "appearance", "segments")} | {"20"}
    after_sampler = {IDS[k] for k in ("sampler", "decode", "create", "save")}

    seed_changed = run_ok(server, animate_prompt(seed=401))
    cached = set(events(seed_changed)["execution_cached"]["nodes"])
    assert cached == upstream | {IDS["pose"]}, sorted(cached)

    strength_changed = run_ok(server, animate_prompt(seed=401, pose={"strength": 0.9}))
    cached = set(events(strength_changed)["execution_cached"]["nodes"])
    assert cached == upstream, sorted(cached)
    assert not after_sampler & cached

    same = run_ok(server, animate_prompt(seed=401, pose={"strength": 0.9}))
    assert set(events(same)["execution_cached"]["nodes"]) == set(animate_prompt())
    RESULTS["caching"] = "ok"


# ---------------------------------------------------------------------------------------------------------------------
# 6: soak
# ---------------------------------------------------------------------------------------------------------------------


def _soak_prompts() -> list[tuple[str, str, dict]]:
    """(kind, label, prompt): kind is "valid", "rejected" (400 at /prompt) or "fails" (execution_error)."""
    def without(prompt, node, name):
        prompt = copy.deepcopy(prompt)
        del prompt[node]["inputs"][name]
        return prompt

    wrong_socket = animate_prompt(seed=500)
    wrong_socket["9001"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    wrong_socket[IDS["sampler"]]["inputs"]["appearance"] = ["9001", 0]
    unknown_node = animate_prompt(seed=500)
    unknown_node["9002"] = {"class_type": "NoSuchNode", "inputs": {}}
    return [
        ("valid", "seed 501", animate_prompt(seed=501)),
        ("rejected", "TemporalSample without its pose input", without(animate_prompt(), IDS["sampler"], "pose")),
        ("valid", "seed 502", animate_prompt(seed=502)),
        ("fails", "AppearanceEncode width 100 (not a multiple of 8)",
         animate_prompt(seed=503, appearance={"width": 100})),
        ("valid", "seed 501 again (cached)", animate_prompt(seed=501)),
        ("rejected", "TemporalSample appearance fed a LATENT", wrong_socket),
        ("fails", "temporal checkpoint = a pickle that runs code",
         animate_prompt(seed=504, loader={"temporal_checkpoint": "evil.ckpt"})),
        ("valid", "seed 503, cfg 1", animate_prompt(seed=503, sampler={"cfg": 1.0})),
        ("rejected", "steps 0 (below the minimum)", animate_prompt(seed=505, sampler={"steps": 0})),
        ("fails", "temporal checkpoint = a truncated .safetensors",
         animate_prompt(seed=506, loader={"temporal_checkpoint": "truncated.safetensors"})),
        ("valid", "seed 504, one pose frame", animate_prompt(seed=504, **{"20": {"length": 1}})),
        ("rejected", "unknown node type", unknown_node),
        ("fails", "denoise 0 without a latent", animate_prompt(seed=507, sampler={"denoise": 0.0})),
        ("valid", "seed 505, pad fit", animate_prompt(seed=505, pose={"fit": "pad"})),
        ("rejected", "text encoder that does not exist",
         animate_prompt(seed=508, clip={"clip_name": "no_such_model.safetensors"})),
        ("fails", "PoseControl end_percent before start_percent",
         animate_prompt(seed=509, pose={"start_percent": 0.9, "end_percent": 0.1})),
        ("valid", "seed 506, independent noise", animate_prompt(seed=506, sampler={"noise_mode": "independent"})),
        ("valid", "seed 502 again (cached)", animate_prompt(seed=502)),
        ("valid", "seed 507, 1 step", animate_prompt(seed=507, sampler={"steps": 1})),
        ("valid", "seed 508", animate_prompt(seed=508)),
    ]


def test_soak_twenty_queued_prompts_valid_and_invalid(server, bad_input_log):
    prompts = _soak_prompts()
    assert len(prompts) == 20
    queued = []
    for kind, label, prompt in prompts:   # all queued before the first one finishes
        status, body = queue(server, prompt)
        if kind == "rejected":
            assert status == 400, (label, body)
            details = [": ".join(x for x in (e.get("message"), e.get("details")) if x)
                       for ne in body.get("node_errors", {}).values() for e in ne["errors"]]
            details = details or [body["error"].get("message")]
            bad_input_log("server", label, "; ".join(d for d in details if d), outcome="HTTP 400")
            continue
        assert status == 200 and not body.get("node_errors"), (label, status, body)
        queued.append((kind, label, body["prompt_id"]))
    started = time.monotonic()
    for kind, label, prompt_id in queued:
        entry = server.wait_for_history(prompt_id, RUN_TIMEOUT_S)
        status = entry["status"]["status_str"]
        if kind == "valid":
            assert status == "success", (label, json.dumps(entry["status"], indent=1)[-3000:])
            if "cached" not in label:
                path = output_file(server, entry, ".mp4")
                import av

                with av.open(str(path)) as container:
                    n = sum(1 for _ in container.decode(container.streams.video[0]))
                assert n == (1 if "one pose frame" in label else FRAMES), (label, n)
        else:
            assert status == "error", label
            error = events(entry)["execution_error"]
            assert error["exception_type"].endswith(("MagicAnimateError", "CheckpointError")), (label, error)
            assert "Traceback" not in error["exception_message"], error["exception_message"]
            bad_input_log("server", label, error["exception_message"], outcome=f"execution_error "
                          f"({error['exception_type'].rsplit('.', 1)[-1]} in {error['node_type']})")
    RESULTS["soak_s"] = round(time.monotonic() - started, 1)
    status, queue_state = server.get("/queue")
    assert status == 200 and queue_state["queue_running"] == [] and queue_state["queue_pending"] == []
    status, stats = server.get("/system_stats")
    assert status == 200 and "system" in stats
    assert server.proc.poll() is None
    entry = run_ok(server, animate_prompt(seed=600))   # still serving
    check_video(output_file(server, entry, ".mp4"))
    latent = plain_latent(server, 3)                     # and the plain model is still untouched
    assert (latent == RESULTS["plain_fresh"]).all()
    shutil.rmtree(server.output_dir / "reliability", ignore_errors=True)
