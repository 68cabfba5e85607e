"""The workflow builder's node specs are read from the nodes themselves (devtools/workflows/schemas.py):

* every pack node's spec is its V3 schema (input names and order, widgets, defaults, control and upload entries,
  outputs), and a change to a schema changes the spec (so a hand copy in its place fails here);
* the one hand copy is the node of a pack that is not installed (DensePosePreprocessor);
* core nodes are pinned to the interface of the version the UI files declare, and at that version the pin drops
  nothing;
* ``import devtools.workflows`` imports nothing from ComfyUI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import devtools.workflows as bw
from devtools.pack import pack_nodes
from devtools.workflows import schemas

REPO = Path(__file__).resolve().parents[2]
PACK_NODES = sorted(ct for ct, ui in bw.NODE_UI.items() if ui.pack)


def _schema_spec(cls) -> tuple[list, list]:
    """(inputs as (name, widget, optional, default, control, upload), outputs as (name, type)) of a V3 node, read
    from its ``define_schema()`` objects, not from the /object_info entry the builder reads."""
    from comfy_api.latest import io

    schema = cls.define_schema()
    ordered = [i for i in schema.inputs if not i.optional] + [i for i in schema.inputs if i.optional]
    inputs = []
    for i in ordered:
        widget = isinstance(i, io.WidgetInput) and not getattr(i, "force_input", None)
        inputs.append((i.id, widget, bool(i.optional), getattr(i, "default", None) if widget else None,
                       bool(getattr(i, "control_after_generate", None)), bool(getattr(i, "upload", None))))
    outputs = [(o.display_name or o.io_type, o.io_type) for o in schema.outputs]
    return inputs, outputs


def _spec_tuple(spec: bw.NodeSpec) -> tuple[list, list]:
    return ([(i.name, i.widget, i.optional, i.default, i.control, i.upload) for i in spec.inputs],
            list(spec.outputs))


@pytest.mark.parametrize("class_type", PACK_NODES)
def test_pack_node_spec_is_its_schema(class_type):
    cls = pack_nodes()[class_type]
    spec = bw.NODE_SPECS[class_type]
    assert _spec_tuple(spec) == _schema_spec(cls)
    assert spec.display_name == cls.define_schema().display_name
    assert spec.pack and spec.size == bw.NODE_UI[class_type].size


def _with_schema(monkeypatch, cls, edit) -> None:
    original = cls.define_schema

    def define_schema(_cls):
        schema = original()
        schema.inputs = edit(list(schema.inputs))
        return schema

    monkeypatch.setattr(cls, "define_schema", classmethod(define_schema))  # ComfyUI checks it is a classmethod


def test_a_changed_schema_changes_the_derived_spec(monkeypatch):
    from comfy_api.latest import io

    class_type = "MagicAnimatePoseAlign"
    cls = pack_nodes()[class_type]
    before = schemas.derived_specs({class_type: bw.NODE_UI[class_type]})[class_type]
    _with_schema(monkeypatch, cls, lambda inputs: [inputs[1], inputs[0], *inputs[2:],
                                                   io.Int.Input("extra", default=7, control_after_generate=True)])
    after = schemas.derived_specs({class_type: bw.NODE_UI[class_type]})[class_type]
    assert [i.name for i in before.inputs] == ["pose_frames", "reference_pose", "mode"]
    assert [i.name for i in after.inputs] == ["reference_pose", "pose_frames", "mode", "extra"]
    assert after.input("extra") == bw.In("extra", "INT", widget=True, default=7, control=True)
    assert _spec_tuple(after) == _schema_spec(cls)


def test_a_changed_default_changes_the_derived_spec(monkeypatch):
    from comfy_api.latest import io

    class_type = "MagicAnimateSegmentFuse"
    cls = pack_nodes()[class_type]

    def edit(inputs):
        return [io.Int.Input("length", default=12, min=1, max=24) if i.id == "length" else i for i in inputs]

    _with_schema(monkeypatch, cls, edit)
    spec = schemas.derived_specs({class_type: bw.NODE_UI[class_type]})[class_type]
    assert spec.input("length").default == 12


def test_the_only_hand_spec_is_the_uninstalled_densepose_estimator():
    assert set(bw.HAND_SPECS) == {"DensePosePreprocessor"}
    assert not set(bw.HAND_SPECS) & set(bw.NODE_UI)
    assert set(bw.NODE_SPECS) == set(bw.NODE_UI) | set(bw.HAND_SPECS)
    assert all(spec.cnr_id for spec in bw.HAND_SPECS.values())
    assert not any(bw.NODE_SPECS[ct].cnr_id for ct in bw.NODE_UI)


def test_core_pins_keep_the_declared_versions_interface():
    import comfyui_version

    import nodes

    for class_type, (names, n_outputs) in schemas.CORE_PINS.items():
        cls = nodes.NODE_CLASS_MAPPINGS[class_type]
        info = schemas.object_info(cls, class_type)
        live = schemas.spec_from_info(info, bw.NODE_UI[class_type])
        pinned = bw.NODE_SPECS[class_type]
        assert [i.name for i in pinned.inputs] == list(names) and len(pinned.outputs) == n_outputs
        assert [i.name for i in live.inputs if i.name in names] == list(names)
        assert live.outputs[:n_outputs] == pinned.outputs
        # what the pin drops are optional inputs and outputs after the old ones
        assert all(i.optional for i in live.inputs if i.name not in names), class_type
        if comfyui_version.__version__ == bw.CORE_VERSION:
            assert live == pinned, class_type


def test_input_rules_follow_the_frontend():
    rule = schemas.input_from_info
    assert rule("x", (["a", "b"],), False) == bw.In("x", "COMBO", widget=True)
    assert rule("x", ("INT", {"default": 3, "forceInput": True}), False) == bw.In("x", "INT")
    assert rule("x", ("IMAGE",), True) == bw.In("x", "IMAGE", optional=True)
    assert rule("x", ("COMBO", {"image_upload": True}), False).upload
    assert rule("x", ("COMBO", {"upload": "video"}), False).upload
    assert rule("x", ("INT", {"default": 0, "control_after_generate": True}), False).control
    dynamic = ("COMFY_DYNAMICCOMBO_V3", {"options": [{"key": "auto", "inputs": {}}, {"key": "mp4", "inputs": {}}]})
    assert rule("x", dynamic, False) == bw.In("x", "COMBO", widget=True, default="auto")


def test_importing_the_builder_does_not_import_comfyui():
    code = ("import sys, devtools.workflows as bw; print(bw.SD15_CHECKPOINT, bw.CORE_VERSION); "
            "loaded = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'nodes', 'folder_paths', 'comfy_api')]; "
            "assert not loaded, loaded")
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert bw.SD15_CHECKPOINT in done.stdout
