"""What the editor shows about the nodes besides their widgets.

* a help page per node for the frontend's node documentation panel: ``web/docs/<node id>.md`` (the pack's
  ``WEB_DIRECTORY`` is served at ``/extensions/<pack folder>/``, where frontend 1.32.9 looks), naming every input;
* the DensePose colour-map warning of Pose Control on the node itself (ComfyUI's progress text), not only in the log.
"""

from __future__ import annotations

import importlib
import logging
import re
from pathlib import Path

import pytest
import torch

from devtools.pack import load_pack, pack_nodes
from magicanimate.densepose import viridis_curve

REPO = Path(__file__).resolve().parents[2]


def test_each_node_has_a_help_page_naming_its_inputs_and_outputs():
    pack = load_pack()
    assert pack.WEB_DIRECTORY == "./web"
    for node_id, cls in pack_nodes().items():
        schema = cls.define_schema()
        page = REPO / "web" / "docs" / f"{node_id}.md"
        assert page.is_file(), f"no help page {page.relative_to(REPO)}"
        text = page.read_text(encoding="utf-8")
        assert text.startswith(f"# {schema.display_name}\n"), (node_id, text[:80])
        documented = set(re.findall(r"\*\*([a-z_]+)\*\*", text))
        missing = [inp.id for inp in schema.inputs if inp.id not in documented]
        assert not missing, f"{page.name} does not document {missing}"


class _FakeServer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send_progress_text(self, text: str, node_id: str, sid=None) -> None:
        self.sent.append((node_id, text))


@pytest.fixture
def fake_server(monkeypatch):
    import server

    fake = _FakeServer()
    monkeypatch.setattr(server.PromptServer, "instance", fake, raising=False)
    return fake


def _pose(frames: torch.Tensor, node_id: str = "17"):
    from comfy_execution.utils import CurrentNodeContext

    with CurrentNodeContext("prompt-1", node_id):
        return pack_nodes()["MagicAnimatePoseControl"].execute(object(), frames)


def test_pose_control_shows_the_colour_map_warning_on_the_node(fake_server, caplog):
    with caplog.at_level(logging.WARNING, logger="MagicAnimate"):
        _pose(torch.zeros(2, 32, 32, 3))  # black background: not viridis DensePose
    assert len(fake_server.sent) == 1, fake_server.sent
    node_id, text = fake_server.sent[0]
    assert node_id == "17" and text.startswith("PoseControl warning:") and "viridis" in text and "black" in text, text
    assert "not be DensePose" in caplog.text  # still in the log too


def test_pose_control_shows_nothing_for_viridis_densepose(fake_server):
    idx = torch.zeros(2, 32, 32, dtype=torch.long)
    idx[:, 8:24, 12:20] = 120
    _pose(viridis_curve()[idx])
    assert fake_server.sent == []


def test_search_aliases_cover_the_words_users_search_and_reach_schemas_that_take_them(monkeypatch):
    import types

    api = importlib.import_module(load_pack().__name__ + ".nodes.api")
    assert set(api.SEARCH_ALIASES) == set(pack_nodes())
    words = {w.lower() for aliases in api.SEARCH_ALIASES.values() for w in aliases}
    assert {"densepose", "pose video", "dance", "animate anyone"} <= words
    if "search_aliases" in getattr(api.io.Schema, "__dataclass_fields__", {}):  # newer ComfyUI: served to the UI
        info = pack_nodes()["MagicAnimatePoseControl"].GET_NODE_INFO_V1()
        assert "DensePose" in info["search_aliases"], info.get("search_aliases")
    else:  # ComfyUI 0.3.75: io.Schema has no such field, so none is passed
        assert api.search_aliases("MagicAnimatePoseControl") == {}
    newer = types.SimpleNamespace(Schema=type("Schema", (), {"__dataclass_fields__": {"search_aliases": None}}))
    monkeypatch.setattr(api, "io", newer)
    assert "DensePose" in api.search_aliases("MagicAnimatePoseControl")["search_aliases"]
