"""The one resolver for model names, the loop-safe cached listing, dropdowns by config.json, and queue-time checks.

Folders hold only config.json plus empty weight files: the listing never opens the weights.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import pytest

from devtools.pack import PACK_NAME, load_pack, pack_nodes

UNET_CFG = {"_class_name": "AppearanceEncoderModel", "down_block_types": ["CrossAttnDownBlock2D"],
            "cross_attention_dim": 768, "block_out_channels": [320]}
CONTROLNET_CFG = {"_class_name": "ControlNetModel", "conditioning_embedding_out_channels": [16, 32, 96, 256],
                  "down_block_types": ["CrossAttnDownBlock2D"], "cross_attention_dim": 768}
VAE_CFG = {"_class_name": "AutoencoderKL", "block_out_channels": [128, 256], "latent_channels": 4}


def _folder(path: Path, config: object, weights: str = "diffusion_pytorch_model.safetensors") -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config) if not isinstance(config, str) else config)
    (path / weights).write_bytes(b"")
    return path


@pytest.fixture
def paths(tmp_path, monkeypatch):
    """``comfy_adapter.model_folders`` with models/magicanimate pointing at ``tmp_path/models`` and an empty cache."""
    import folder_paths

    load_pack()
    mp = sys.modules[f"{PACK_NAME}.magicanimate.comfy_adapter.model_folders"]
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "magicanimate",
                        ([str(root)], set(mp.CHECKPOINT_EXTENSIONS)))
    monkeypatch.setattr(mp, "_cache", None)
    monkeypatch.setattr(mp, "register", lambda: None)
    return mp, root


def test_dropdowns_list_only_folders_whose_config_describes_that_network(paths, tmp_path):
    mp, root = paths
    (root / "temporal_attention.ckpt").write_bytes(b"")
    (root / "notes.txt").write_text("not a model")
    _folder(root / "appearance_encoder", UNET_CFG)
    _folder(root / "densepose_controlnet", CONTROLNET_CFG)
    _folder(root / "sub" / "unet_no_class", {k: v for k, v in UNET_CFG.items() if k != "_class_name"})
    _folder(root / "cn_bin", {"_class_name": "ControlNetModel"}, "diffusion_pytorch_model.bin")
    _folder(root / "vae", VAE_CFG)
    _folder(root / "bad_json", "{ not json")
    _folder(root / "list_json", [1, 2])
    (root / "no_weights").mkdir()
    (root / "no_weights" / "config.json").write_text(json.dumps(UNET_CFG))
    assert mp.names("appearance") == ["appearance_encoder", "sub/unet_no_class"]
    assert mp.names("controlnet") == ["densepose_controlnet", "cn_bin"]  # likely names first
    assert mp.names("temporal") == ["temporal_attention.ckpt"]  # weights inside diffusers folders are not listed


def test_malformed_entries_never_block_or_break_the_listing_and_each_is_named_once(paths, caplog, monkeypatch):
    """A FIFO config.json (reading it would block forever), one nested too deeply for the JSON parser
    (RecursionError), undecodable bytes, a FIFO and a link to nothing named like checkpoints, weights without read
    permission: each is left out with one log line naming it and saying why (never the file's bytes); the good
    entries stay listed."""
    import threading

    mp, root = paths
    (root / "temporal_attention.ckpt").write_bytes(b"")
    _folder(root / "appearance_encoder", UNET_CFG)
    _folder(root / "nested", "[" * 200_000 + "]" * 200_000)
    _folder(root / "undecodable", "")
    (root / "undecodable" / "config.json").write_bytes(b"\xff\xfe SECRET-BYTES")
    (root / "fifo_config").mkdir()
    (root / "fifo_config" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    os.mkfifo(root / "fifo_config" / "config.json")
    os.mkfifo(root / "fifo.ckpt")
    os.symlink(root / "nowhere.ckpt", root / "broken.ckpt")
    # No read permission (the suite runs as root, who may read anything: the permission check is what is stood in).
    (root / "locked.ckpt").write_bytes(b"")
    _folder(root / "locked_encoder", UNET_CFG)
    locked = {str(root / "locked.ckpt"), str(root / "locked_encoder" / "diffusion_pytorch_model.safetensors")}
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: str(path) not in locked and access(path, mode, **kw))
    result = {}
    with caplog.at_level("WARNING", logger="MagicAnimate"):
        worker = threading.Thread(target=lambda: result.update(names={k: mp.names(k) for k in mp.KINDS}),
                                  daemon=True)
        worker.start()
        worker.join(timeout=30)
    if worker.is_alive():  # unblock the reader so the test process can end
        with open(root / "fifo_config" / "config.json", "w"):
            pass
        pytest.fail("the listing blocked on a FIFO")
    assert result["names"] == {"temporal": ["temporal_attention.ckpt"], "appearance": ["appearance_encoder"],
                               "controlnet": []}
    lines = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    expected = {"'nested'": "not valid JSON", "'undecodable'": "not UTF-8", "'fifo_config'": "not a regular file",
                "'fifo.ckpt'": "not a regular file", "'broken.ckpt'": "cannot be read",
                "'locked.ckpt'": "no read permission", "'locked_encoder'": "no read permission"}
    for name, why in expected.items():
        assert len([line for line in lines if name in line and why in line]) == 1, (name, lines)
    assert len(lines) == len(expected) and not any("SECRET" in line for line in lines), lines


def test_resolver_accepts_listed_names_and_refuses_everything_else_with_one_message(paths, tmp_path):
    mp, root = paths
    (root / "temporal_attention.ckpt").write_bytes(b"x")
    _folder(root / "appearance_encoder", UNET_CFG)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.ckpt").write_text("TOP-SECRET-CONTENT")
    (outside / "motion.ckpt").write_bytes(b"m")
    os.symlink(outside, root / "linked")                      # a link the user placed there works
    assert mp.resolve("temporal_attention.ckpt", "temporal") == str(root / "temporal_attention.ckpt")
    assert mp.resolve("linked/motion.ckpt", "temporal") == str(root / "linked" / "motion.ckpt")
    errors = load_pack().magicanimate.errors
    messages = {}
    for name in (str(outside / "secret.ckpt"), str(outside / "missing.ckpt"), "../outside/secret.ckpt",
                 "../outside/missing.ckpt", "./temporal_attention.ckpt", "linked/../temporal_attention.ckpt",
                 "appearance_encoder", "", "x" * 5000, None, 3, ["temporal_attention.ckpt"]):
        with pytest.raises(errors.MagicAnimateError) as info:
            mp.resolve(name, "temporal")
        message = str(info.value)
        assert "TOP-SECRET" not in message and str(tmp_path) not in message, message
        assert len(message) < 600 and "\n" not in message
        messages[repr(name)[:40]] = message.replace(mp.describe(name), "<name>")
    # the same words whether the path exists elsewhere or not
    assert len(set(messages.values())) == 1, messages
    with pytest.raises(errors.MagicAnimateError):
        mp.resolve("temporal_attention.ckpt", "appearance")


def test_listing_is_loop_safe_bounded_cached_and_refreshed(paths, tmp_path, monkeypatch):
    mp, root = paths
    (root / "a.ckpt").write_bytes(b"")
    os.symlink(".", root / "loop_self")
    os.symlink("..", root / "loop_parent")
    os.symlink("loop_x", root / "loop_x")                       # a link to itself (ELOOP)
    deep = root
    for i in range(mp.MAX_DEPTH + 3):
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    (deep / "too_deep.ckpt").write_bytes(b"")
    started = time.monotonic()
    listed = mp.names("temporal")
    assert time.monotonic() - started < 1.0
    assert "a.ckpt" in listed and not any("too_deep" in n for n in listed)
    assert not any(n.startswith("loop_self/") for n in listed)
    walks = []
    real_walk = mp._walk_root
    monkeypatch.setattr(mp, "_walk_root", lambda r, lst: (walks.append(r), real_walk(r, lst)))
    for _ in range(5):
        assert mp.names("temporal") == listed
    assert walks == [], "an unchanged folder was walked again"
    (root / "b.ckpt").write_bytes(b"")                         # refreshed when a walked folder changes
    assert "b.ckpt" in mp.names("temporal") and len(walks) == 1
    sub = _folder(root / "enc", VAE_CFG)
    assert "enc" not in mp.names("appearance")
    time.sleep(0.01)
    (sub / "config.json").write_text(json.dumps(UNET_CFG))   # a config.json edited in place is seen too
    assert "enc" in mp.names("appearance")


def test_listing_stops_after_max_entries(paths, monkeypatch):
    mp, root = paths
    monkeypatch.setattr(mp, "MAX_ENTRIES", 50)
    for i in range(200):
        (root / f"m{i:03d}.ckpt").write_bytes(b"")
    assert len(mp.names("temporal")) <= 50


# ---------------------------------------------------------------------------------------------------------------------
# validate_inputs: queue-time checks of combos and floats
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("node_id, inputs, phrase", [
    ("MagicAnimateLoader", {"weight_dtype": "fp8"}, "weight_dtype 'fp8' is not one of its options"),
    ("MagicAnimateLoader", {"temporal_checkpoint": "/etc/passwd"}, "is not a temporal checkpoint listed"),
    ("MagicAnimateLoader", {"appearance_encoder": "../../x"}, "is not an appearance-encoder folder listed"),
    ("MagicAnimateLoader", {"densepose_controlnet": "appearance_encoder"}, "is not a DensePose ControlNet folder"),
    ("MagicAnimateAppearanceEncode", {"fit": "zoom"}, "fit 'zoom' is not one of its options"),
    ("MagicAnimatePoseControl", {"strength": math.nan}, "strength is nan; it must be a finite number"),
    ("MagicAnimatePoseControl", {"end_percent": math.inf}, "end_percent is inf"),
    ("MagicAnimatePoseControl", {"start_percent": -0.5}, "start_percent is -0.5; it must be between 0.0 and 1.0"),
    ("MagicAnimatePoseControl", {"fit": 3}, "fit 3 is not one of its options"),
    ("MagicAnimateSegmentFuse", {"fuse": "median"}, "fuse 'median' is not one of its options"),
    ("MagicAnimateTemporalSample", {"cfg": math.nan}, "cfg is nan"),
    ("MagicAnimateTemporalSample", {"denoise": -math.inf}, "denoise is -inf"),
    ("MagicAnimateTemporalSample", {"sampler_name": "no_such_sampler"}, "sampler_name 'no_such_sampler' is not"),
    ("MagicAnimateTemporalSample", {"scheduler": {"x": 1}}, "scheduler {'x': 1} is not one of its options"),
    ("MagicAnimateTemporalSample", {"noise_mode": "pink"}, "noise_mode 'pink' is not one of its options"),
])
def test_validate_inputs_refuses_bad_widget_values(paths, node_id, inputs, phrase):
    mp, root = paths
    (root / "temporal_attention.ckpt").write_bytes(b"")
    _folder(root / "appearance_encoder", UNET_CFG)
    _folder(root / "densepose_controlnet", CONTROLNET_CFG)
    node = pack_nodes()[node_id]
    result = node.validate_inputs(**inputs)
    assert isinstance(result, str), result
    assert phrase in result and result.startswith(node.define_schema().display_name), result


def test_validate_inputs_accepts_good_and_linked_values(paths):
    mp, root = paths
    (root / "temporal_attention.ckpt").write_bytes(b"")
    _folder(root / "appearance_encoder", UNET_CFG)
    _folder(root / "densepose_controlnet", CONTROLNET_CFG)
    nodes = pack_nodes()
    assert nodes["MagicAnimateLoader"].validate_inputs(
        temporal_checkpoint="temporal_attention.ckpt", appearance_encoder="appearance_encoder",
        densepose_controlnet="densepose_controlnet", weight_dtype="bf16") is True
    assert nodes["MagicAnimateLoader"].validate_inputs(temporal_checkpoint=None) is True   # linked: checked later
    assert nodes["MagicAnimatePoseControl"].validate_inputs(strength=10.0, start_percent=0.0, end_percent=1.0,
                                                            fit="crop") is True
    assert nodes["MagicAnimateTemporalSample"].validate_inputs(cfg=100.0, sampler_name="reference_ddim",
                                                               scheduler="karras", denoise=0.5,
                                                               noise_mode="independent") is True
