"""Malformed entries of a ``models/magicanimate`` folder, and what the pack must make of them: each left out of the
dropdowns with one log line naming it and saying why, nothing else hidden (used by the lockdown server's tests)."""

from __future__ import annotations

import os
from pathlib import Path

#: Malformed entries of models/magicanimate -> what the one log line about each says. Each of them once stopped
#: the listing (a FIFO config.json blocked it, a deeply nested one raised RecursionError) or went unreported.
MALFORMED = {
    "fifo_config": "config.json is not a regular file",
    "nested_config": "not valid JSON",
    "truncated_config": "not valid JSON",
    "undecodable_config": "not UTF-8 text",
    "fifo.ckpt": "not a regular file",
    "broken_link.ckpt": "cannot be read",
}


def write_malformed(folder: Path) -> None:
    """The :data:`MALFORMED` entries: diffusers folders with a bad config.json (and empty weights), a FIFO named
    like a checkpoint and a link to nothing."""
    configs = {"nested_config": b"[" * 200_000 + b"]" * 200_000,
               "truncated_config": b'{"_class_name": "ControlNetModel", "conditioning_embedding_out_',
               "undecodable_config": b'\xff\xfe{\x00"\x00_\x00'}
    for name in ("fifo_config", *configs):
        (folder / name).mkdir()
        (folder / name / "diffusion_pytorch_model.safetensors").write_bytes(b"")
        if name in configs:
            (folder / name / "config.json").write_bytes(configs[name])
    os.mkfifo(folder / "fifo_config" / "config.json")
    os.mkfifo(folder / "fifo.ckpt")
    os.symlink(folder / "nowhere.ckpt", folder / "broken_link.ckpt")


def check_left_out(object_info: dict, log: str) -> list[str]:
    """Assert that ``/object_info`` lists Load MagicAnimate without any :data:`MALFORMED` entry and that ``log`` holds
    exactly one line about each; returns every name the loader's three dropdowns list."""
    required = object_info["MagicAnimateLoader"]["input"]["required"]
    listed = [n for name in ("temporal_checkpoint", "appearance_encoder", "densepose_controlnet")
              for n in (required[name][1]["options"] if required[name][0] == "COMBO" else required[name][0])]
    assert not [n for n in listed if n.split("/")[0] in MALFORMED], listed
    for name, why in MALFORMED.items():
        lines = [line for line in log.splitlines() if "left out of the models/magicanimate dropdowns" in line
                 and f"'{name}'" in line]
        # One line: the listing is walked again only when a folder in it changes, and nothing here changed.
        assert len(lines) == 1 and why in lines[0], (name, lines)
    return listed
