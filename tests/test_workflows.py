"""The shipped workflows (example_workflows/*.json, workflows/api/*.api.json), no weights.

* the JSON files are exactly what devtools.workflows generates now (no hand edits, no drift), the UI files
  alone in the folder the frontend lists as templates, the API files where it never looks;
* every UI file opens readable: its saved zoom is at or above the frontend's own text level-of-detail threshold (read
  from the frontend package) and every node lies in the uncovered part of a 1920x1080 window;
* the builder's node specs (input order, widgets, defaults, outputs; read from ComfyUI, core nodes pinned to the
  version the files declare) match the real ComfyUI + pack nodes, so the UI files' positional ``widgets_values`` are
  in the order ComfyUI's frontend expects;
* ComfyUI's own ``validate_prompt`` accepts both API workflows (with empty stand-in model and input files);
* UI and API files describe the same nodes and links;
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

import devtools.workflows as bw

REPO = Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "ComfyUI-MagicAnimate"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


GRAPHS = sorted(bw.GRAPHS)
#: Node types of other packs (not installed in the tests): comfyui_controlnet_aux's DensePose estimator.
EXTERNAL = sorted(ct for ct, spec in bw.NODE_SPECS.items() if spec.cnr_id)


def _ui(graph: str) -> dict:
    return json.loads(bw.ui_path(graph).read_text(encoding="utf-8"))


def _api(graph: str) -> dict:
    return json.loads(bw.api_path(graph).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def comfy_nodes(tmp_path_factory):
    """ComfyUI's ``nodes`` module with core extras and this pack loaded as a custom node (as ComfyUI loads it)."""
    import folder_paths
    from comfy.cli_args import args

    import nodes

    if not all(ct in nodes.NODE_CLASS_MAPPINGS for ct in set(bw.NODE_SPECS) - set(EXTERNAL)):
        custom = tmp_path_factory.mktemp("custom_nodes")
        (custom / PACK_DIR_NAME).symlink_to(REPO, target_is_directory=True)
        saved = folder_paths.folder_names_and_paths["custom_nodes"], args.whitelist_custom_nodes
        folder_paths.folder_names_and_paths["custom_nodes"] = ([str(custom)], set())
        args.whitelist_custom_nodes = [PACK_DIR_NAME]
        try:
            if "SaveVideo" in nodes.NODE_CLASS_MAPPINGS:  # core extras already loaded by another test
                asyncio.run(nodes.init_external_custom_nodes())
            else:
                asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        finally:
            folder_paths.folder_names_and_paths["custom_nodes"], args.whitelist_custom_nodes = saved
    missing = [ct for ct in set(bw.NODE_SPECS) - set(EXTERNAL) if ct not in nodes.NODE_CLASS_MAPPINGS]
    assert not missing, f"not registered in ComfyUI: {missing}"
    return nodes


def _node_info(cls) -> dict:
    """Like ComfyUI's /object_info entry: inputs, input_order, outputs, display name."""
    if hasattr(cls, "GET_NODE_INFO_V1"):  # V3 node
        info = cls.GET_NODE_INFO_V1()
        return {"input": info["input"], "order": info["input_order"], "output": list(info["output"]),
                "output_name": list(info["output_name"]), "display_name": info["display_name"]}
    import nodes

    types = cls.INPUT_TYPES()
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    return {"input": types, "order": {k: list(v) for k, v in types.items()}, "output": list(cls.RETURN_TYPES),
            "output_name": list(names), "display_name": nodes.NODE_DISPLAY_NAME_MAPPINGS.get(cls.__name__)}


# ------------------------------------------------------------------------------------------------------------------


def test_json_files_are_what_build_workflows_generates():
    stale = [p.name for p, text in bw.rendered().items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
    assert not stale, f"stale: {stale}; run `python -m devtools.workflows` and commit the result"


def test_only_ui_workflows_are_listed_as_templates():
    """ComfyUI's /workflow_templates lists ``<pack>/{example_workflows,example,examples,workflow,workflows}/*.json``
    (app/custom_node_manager.py): only the UI files may be there, each with its thumbnail."""
    listed = sorted(p for folder in ("example_workflows", "example", "examples", "workflow", "workflows")
                    for p in (REPO / folder).glob("*.json"))
    assert listed == sorted(bw.ui_path(g) for g in GRAPHS)
    for path in listed:
        assert "nodes" in json.loads(path.read_text(encoding="utf-8")), f"{path} is not a UI-format workflow"
        assert path.with_suffix(".jpg").is_file(), f"no thumbnail {path.with_suffix('.jpg').name}; run the browser test"


def _frontend_lod_threshold() -> float:
    """The zoom below which frontend 1.32.9 draws nodes without text, at its default settings and DPR 1:
    ``LiteGraph.Canvas.MinFontSizeForLOD`` default / ``LiteGraph.NODE_TEXT_SIZE``, read from its bundled JS."""
    import re

    import comfyui_frontend_package

    assets = Path(comfyui_frontend_package.__file__).parent / "static" / "assets"
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in assets.glob("*.js"))
    font = re.search(r'id:["`]LiteGraph\.Canvas\.MinFontSizeForLOD["`],name:.{0,1000}?defaultValue:(\d+(?:\.\d+)?)',
                     text)
    size = re.search(r"NODE_TEXT_SIZE=(\d+)", text)
    assert font and size, "the frontend's LOD setting or NODE_TEXT_SIZE was not found in its JS"
    return float(font.group(1)) / float(size.group(1))


@pytest.mark.parametrize("graph", GRAPHS)
def test_ui_workflow_opens_readable_with_nothing_hidden(graph):
    ui = _ui(graph)
    ds = ui["extra"]["ds"]
    threshold = _frontend_lod_threshold()
    assert 0.5 < threshold < bw.MIN_SAVED_SCALE
    assert ds["scale"] >= bw.MIN_SAVED_SCALE > threshold, ds
    scale, (ox, oy) = ds["scale"], ds["offset"]
    for node in ui["nodes"]:
        left, top = (node["pos"][0] + ox) * scale, (node["pos"][1] - bw.TITLE_HEIGHT + oy) * scale
        right, bottom = (node["pos"][0] + node["size"][0] + ox) * scale, (node["pos"][1] + node["size"][1] + oy) * scale
        where = (node["type"], left, top, right, bottom)
        assert bw.VIEW_LEFT <= left and right <= bw.VIEW_RIGHT, where
        assert bw.VIEW_TOP <= top and bottom <= bw.VIEW_BOTTOM, where
        assert right <= bw.MINIMAP_LEFT or bottom <= bw.MINIMAP_TOP, where
    for group in ui["groups"]:  # the groups' frames and titles too
        x, y, w, h = group["bounding"]
        left, top, right, bottom = (x + ox) * scale, (y + oy) * scale, (x + w + ox) * scale, (y + h + oy) * scale
        assert bw.VIEW_LEFT <= left and right <= bw.VIEW_RIGHT and bw.VIEW_TOP <= top and bottom <= bw.VIEW_BOTTOM
        assert right <= bw.MINIMAP_LEFT or bottom <= bw.MINIMAP_TOP, group["title"]


@pytest.mark.parametrize("class_type", sorted(set(bw.NODE_SPECS) - set(EXTERNAL)))
def test_node_table_matches_real_node(comfy_nodes, class_type):
    """The specs the templates are built from hold on the running ComfyUI. They are read from it, but core nodes are
    pinned to the version the files declare (``schemas.CORE_PINS``): a newer core may add optional inputs after the
    spec's, make a required input optional, append outputs (links use slot indices), mark the node deprecated in its
    display name, or make a combo a dynamic combo; everything else the spec declares must still hold."""
    spec = bw.NODE_SPECS[class_type]
    info = _node_info(comfy_nodes.NODE_CLASS_MAPPINGS[class_type])
    assert info["display_name"] in (spec.display_name, f"{spec.display_name} (DEPRECATED)")
    order = info["order"].get("required", []) + info["order"].get("optional", [])
    names = [i.name for i in spec.inputs]
    assert order[:len(names)] == names  # frontend order: required then optional, each as declared
    assert all(extra in info["input"].get("optional", {}) for extra in order[len(names):]), order
    for inp in spec.inputs:
        section = "optional" if inp.name in info["input"].get("optional", {}) else "required"
        assert not inp.optional or section == "optional", inp.name  # required in the spec may have become optional
        entry = info["input"][section][inp.name]
        type_, opts = entry[0], (entry[1] if len(entry) > 1 else {})
        type_ = "COMBO" if isinstance(type_, list) or "DYNAMICCOMBO" in str(type_).upper() else type_
        is_widget = type_ in WIDGET_TYPES and not opts.get("forceInput")
        assert inp.widget == is_widget, inp.name
        assert inp.type == type_, inp.name
        assert inp.control == bool(opts.get("control_after_generate")), inp.name
        assert inp.upload == bool(opts.get("image_upload") or opts.get("video_upload")), inp.name
        dynamic = [o.get("key") for o in opts.get("options", []) if isinstance(o, dict)]
        if inp.default is not None and dynamic and "default" not in opts:  # a dynamic combo: its first option
            assert inp.default == dynamic[0], (inp.name, dynamic)
        elif inp.default is not None:
            assert inp.default == opts.get("default"), inp.name
    assert info["output"][:len(spec.outputs)] == [t for _, t in spec.outputs]
    assert info["output_name"][:len(spec.outputs)] == [n for n, _ in spec.outputs]


@pytest.mark.parametrize("graph", GRAPHS)
def test_api_workflow_is_accepted_by_comfyui(comfy_nodes, graph, tmp_path, monkeypatch):
    import execution
    import folder_paths

    prompt = bw.with_densepose_video(_api(graph))  # comfyui_controlnet_aux is not installed here
    for node_id, node in prompt.items():
        cls = comfy_nodes.NODE_CLASS_MAPPINGS[node["class_type"]]
        info = _node_info(cls)
        known = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        for name, value in node["inputs"].items():
            assert name in known, f"{node_id} {node['class_type']} has no input {name}"
            if isinstance(value, list):
                src = prompt[value[0]]
                src_type = _node_info(comfy_nodes.NODE_CLASS_MAPPINGS[src["class_type"]])["output"][value[1]]
                want = known[name][0]
                # a multi-type input ("IMAGE,VIDEO") takes any of its types
                assert src_type in (["COMBO"] if isinstance(want, list) else want.split(",")), (node_id, name)

    # ComfyUI's own validation (types, ranges, combo values, files), with empty stand-in model and input files.
    models = tmp_path / "models"
    names = {"checkpoints": [bw.SD15_CHECKPOINT], "vae": [bw.SD_VAE], "text_encoders": [bw.SD15_TEXT_ENCODER],
             "magicanimate": [bw.TEMPORAL_CHECKPOINT]
             + [f"{d}/{f}" for d in (bw.APPEARANCE_ENCODER, bw.DENSEPOSE_CONTROLNET)
                for f in ("config.json", "diffusion_pytorch_model.safetensors")]}
    # The loader lists a folder only when its config.json names the right network.
    configs = {f"{bw.APPEARANCE_ENCODER}/config.json": b'{"_class_name": "UNet2DConditionModel"}',
               f"{bw.DENSEPOSE_CONTROLNET}/config.json": b'{"_class_name": "ControlNetModel"}'}
    for folder, files in names.items():
        for rel in files:
            (models / folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (models / folder / rel).write_bytes(configs.get(rel, b""))
        exts = folder_paths.folder_names_and_paths.get(folder, ([], set()))[1]
        monkeypatch.setitem(folder_paths.folder_names_and_paths, folder, ([str(models / folder)], exts))
    inputs = tmp_path / "input"
    inputs.mkdir()
    for name in bw.DEMO_INPUTS:
        shutil.copy(REPO / "example_inputs" / name, inputs / name)
    shutil.copy(REPO / "example_inputs" / bw.DEMO_VIDEO, inputs / bw.FROM_VIDEO_INPUT)  # the user's own video
    monkeypatch.setattr(folder_paths, "input_directory", str(inputs))

    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt("test", prompt, None))
    assert valid, (error, node_errors)
    saver = "MagicAnimateSaveVideo" if graph == "magicanimate_long_video" else "SaveVideo"
    assert [prompt[o]["class_type"] for o in outputs] == [saver]


@pytest.mark.parametrize("graph", GRAPHS)
def test_ui_and_api_files_describe_the_same_graph(graph):
    ui, api = _ui(graph), _api(graph)
    assert bw.api_from_ui(ui) == api
    assert ui["version"] == 0.4 and ui["last_node_id"] == max(n["id"] for n in ui["nodes"])
    assert ui["last_link_id"] == len(ui["links"]) == len({link[0] for link in ui["links"]})
    nodes = {n["id"]: n for n in ui["nodes"] if n["type"] != bw.NOTE_TYPE}
    assert len({n["id"] for n in ui["nodes"]}) == len(ui["nodes"]) and len(nodes) == len(api)
    for link_id, src, src_slot, dst, dst_slot, type_ in ui["links"]:
        out = nodes[src]["outputs"][src_slot]
        assert link_id in out["links"] and out["type"] == type_
        inp = nodes[dst]["inputs"][dst_slot]
        assert inp["link"] == link_id and (type_ in inp["type"].split(",") or inp["type"] == "COMBO")
    for node in nodes.values():
        spec = bw.NODE_SPECS[node["type"]]
        assert len(node["widgets_values"]) == sum(1 + i.control + i.upload for i in spec.widgets)
        linked = {i["link"] for i in node["inputs"] if i["link"] is not None}
        assert linked == {link[0] for link in ui["links"] if link[3] == node["id"]}
        for slot, out in enumerate(node["outputs"]):
            assert (out["links"] or []) == [link[0] for link in ui["links"] if link[1:3] == [node["id"], slot]]
    order = [n["id"] for n in sorted(nodes.values(), key=lambda n: n["order"])]
    for _lid, src, _ss, dst, _ds, _t in ui["links"]:
        assert order.index(src) < order.index(dst)  # "order" is an execution order
        # the layout reads left to right (or down, for a node stacked under its source)
        assert nodes[src]["pos"][0] < nodes[dst]["pos"][0] or (
            nodes[src]["pos"][0] == nodes[dst]["pos"][0] and nodes[src]["pos"][1] < nodes[dst]["pos"][1]), (src, dst)


def test_widget_index_follows_control_and_upload_entries():
    assert bw.widget_index("MagicAnimateTemporalSample", "seed") == 0
    assert bw.widget_index("MagicAnimateTemporalSample", "steps") == 2  # after seed's "fixed"
    assert bw.widget_index("KSampler", "denoise") == 6
    assert bw.widget_index("SaveVideo", "codec") == 2


# ------------------------------------------------------------------------------------------------------------------
# What the templates say about themselves: note, groups, model downloads, audio


def _notes(ui: dict) -> list[dict]:
    return [n for n in ui["nodes"] if n["type"] == bw.NOTE_TYPE]


@pytest.mark.parametrize("graph", GRAPHS)
def test_note_names_the_command_and_every_model_file(graph):
    """One Markdown note per template: the fetch command, where to run it, each model file the template loads with
    the folder it goes in, and the size on disk (read from model_layout, as the note is written)."""
    from magicanimate import model_layout

    notes = _notes(_ui(graph))
    assert len(notes) == 1, f"{graph}: {len(notes)} notes"
    text = notes[0]["widgets_values"][0]
    assert bw.GET_MODELS in text and bw.PACK_FOLDER in text, text
    files = list(model_layout.FETCHED) + ([model_layout.SD15_CHECKPOINT] if graph == "txt2img_then_animate" else [])
    for f in files:
        assert f.destination in text, f"{graph}: the note does not say where {f.name} goes"
    assert "10.7 GB" in text, text
    assert (f"{bw.GET_MODELS} {bw.WITH_CHECKPOINT}" in text) == (graph == "txt2img_then_animate"), text
    assert ("comfyui_controlnet_aux" in text) == (graph == "magicanimate_from_video"), text


@pytest.mark.parametrize("graph", GRAPHS)
def test_every_node_lies_in_exactly_one_titled_group(graph):
    ui = _ui(graph)
    titles = [g["title"] for g in ui["groups"]]
    assert titles == [s.title for s in bw.GROUPS.values()], titles
    for node in ui["nodes"]:
        left, top = node["pos"][0], node["pos"][1] - bw.TITLE_HEIGHT
        right, bottom = node["pos"][0] + node["size"][0], node["pos"][1] + node["size"][1]
        inside = [g["title"] for g in ui["groups"] if g["bounding"][0] <= left and right <= sum(g["bounding"][::2])
                  and g["bounding"][1] <= top and bottom <= sum(g["bounding"][1::2])]
        assert len(inside) == 1, (node.get("title") or node["type"], inside)


@pytest.mark.parametrize("graph", GRAPHS)
def test_loaders_offer_the_files_the_frontend_can_download(graph):
    """``properties.models`` on each loader whose file the frontend's missing-models dialog can fetch (one
    ``.safetensors`` from huggingface.co, named as the widget names it), taken from model_layout; none elsewhere."""
    from magicanimate import model_layout

    offered = {}
    for node in _ui(graph)["nodes"]:
        for entry in node.get("properties", {}).get("models", []):
            assert entry["name"] in node["widgets_values"], (node["type"], entry)
            offered[entry["name"]] = entry
    expected = {model_layout.SD_VAE, model_layout.SD15_CHECKPOINT if graph == "txt2img_then_animate"
                else model_layout.SD15_TEXT_ENCODER}
    assert offered == {f.name: {"name": f.name, "url": f.urls[0], "directory": f.folder} for f in expected}
    for entry in offered.values():
        assert entry["url"].startswith("https://huggingface.co/") and entry["url"].endswith(".safetensors")


@pytest.mark.parametrize("graph", GRAPHS)
def test_animation_prompts_use_the_sd15_text_encoder(graph):
    api = _api(graph)
    encoders = {k: n for k, n in api.items() if n["class_type"] == "CLIPTextEncode"
                and n["_meta"]["title"].endswith("(keep empty)")}
    assert len(encoders) == 2
    for node in encoders.values():
        source = api[node["inputs"]["clip"][0]]
        if graph == "txt2img_then_animate":
            assert source["class_type"] == "CheckpointLoaderSimple"
        else:
            assert source["class_type"] == "CLIPLoader"
            assert source["inputs"]["clip_name"] == bw.SD15_TEXT_ENCODER
            assert source["inputs"]["type"] == bw.SD15_TEXT_ENCODER_TYPE


def test_from_video_template_keeps_the_source_audio():
    api = _api("magicanimate_from_video")
    (create,) = [n for n in api.values() if n["class_type"] == "CreateVideo"]
    source, slot = create["inputs"]["audio"]
    assert api[source]["class_type"] == "GetVideoComponents" and slot == 1  # outputs: images, audio, fps
    assert api[api[source]["inputs"]["video"][0]]["class_type"] == "LoadVideo"


@pytest.mark.parametrize("graph", GRAPHS)
def test_notes_are_not_in_the_api_format(graph):
    assert all(n["class_type"] != bw.NOTE_TYPE for n in _api(graph).values())
    assert bw.api_from_ui(_ui(graph)) == _api(graph)
