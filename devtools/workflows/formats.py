"""The two ComfyUI workflow formats: API prompts and UI workflows, written from a :class:`Graph`."""

from __future__ import annotations

import json
import uuid

from .graph import Graph, Node
from .layout import _layout, _node_size, check_layout, group_bounding, saved_view
from .nodes import CORE_VERSION, DEMO_VIDEO, NODE_SPECS, PACK_REGISTRY_ID, Out, _widgets_values
from .notes import GROUPS, NOTE_TYPE, model_entries

# ------------------------------------------------------------------------------------------------------------------
# API format


def _title(node: Node) -> str:
    return node.title or node.spec.display_name


def to_api(g: Graph) -> dict:
    prompt = {}
    for node in g.nodes:
        inputs = {}
        for inp in node.spec.inputs:
            if inp.name in node.values:
                value = node.values[inp.name]
                inputs[inp.name] = [str(value.node), value.slot] if isinstance(value, Out) else value
        prompt[str(node.id)] = {"class_type": node.class_type, "inputs": inputs, "_meta": {"title": _title(node)}}
    return prompt



def to_ui(g: Graph) -> dict:
    links = []
    link_of: dict[tuple[int, str], int] = {}
    out_links: dict[tuple[int, int], list[int]] = {}
    for target, name, src in g.edges():
        link_id = len(links) + 1
        link_of[(target.id, name)] = link_id
        out_links.setdefault((src.node, src.slot), []).append(link_id)
        links.append([link_id, src.node, src.slot, target.id, None, g.node(src.node).spec.outputs[src.slot][1]])
    slot_of_link: dict[int, int] = {}
    pos = _layout(g)
    ui_nodes = []
    for order, node in enumerate(g.nodes):
        spec = node.spec
        inputs = []
        for inp in spec.inputs:  # sockets first, in input order
            if not inp.widget:
                entry = {"name": inp.name, "type": inp.type}
                if inp.optional:
                    entry["shape"] = 7
                entry["link"] = link_of.get((node.id, inp.name))
                inputs.append(entry)
        for inp in spec.inputs:  # then widgets driven by a link
            if inp.widget and (node.id, inp.name) in link_of:
                inputs.append({"name": inp.name, "type": inp.type, "widget": {"name": inp.name},
                               "link": link_of[(node.id, inp.name)]})
        for slot, entry in enumerate(inputs):
            if entry["link"] is not None:
                slot_of_link[entry["link"]] = slot
        outputs = [{"name": name, "type": type_, "links": out_links.get((node.id, slot))}
                   for slot, (name, type_) in enumerate(spec.outputs)]
        if spec.pack:
            properties = {"cnr_id": PACK_REGISTRY_ID}
        elif spec.cnr_id:
            properties = {"cnr_id": spec.cnr_id}
        else:
            properties = {"cnr_id": "comfy-core", "ver": CORE_VERSION}
        properties["Node name for S&R"] = node.class_type
        widgets_values = _widgets_values(spec, node.values)
        models = model_entries(widgets_values)
        if models:  # the frontend offers to download these when they are missing
            properties["models"] = models
        ui_node = {"id": node.id, "type": node.class_type, "pos": pos[node.id], "size": _node_size(node), "flags": {},
                   "order": order, "mode": 0, "inputs": inputs, "outputs": outputs}
        if node.title:
            ui_node["title"] = node.title
        ui_node["properties"] = properties
        ui_node["widgets_values"] = widgets_values
        ui_nodes.append(ui_node)
    ui_nodes += _note_nodes(g, len(ui_nodes))
    for link in links:
        link[4] = slot_of_link[link[0]]
    groups = _groups(g, ui_nodes)
    problems = check_layout({"nodes": ui_nodes, "links": links, "groups": groups})
    if problems:
        raise ValueError(f"workflow {g.name}: layout problems (change the at=... positions):\n  "
                         + "\n  ".join(problems))
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{PACK_REGISTRY_ID}/workflows/{g.name}")),
        "revision": 0,
        "last_node_id": len(ui_nodes),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": groups,
        "config": {},
        "extra": {"ds": saved_view(ui_nodes, g.name, groups), "info": {"description": g.description}},
        "version": 0.4,
    }


def _note_nodes(g: Graph, first: int) -> list[dict]:
    """The UI nodes of the graph's notes, numbered after its nodes (so the API ids stay 1..n): a ``MarkdownNote``
    as the frontend saves one (its text the one widget value, the yellow of the frontend's own notes)."""
    return [{"id": first + k + 1, "type": NOTE_TYPE, "pos": list(note.at), "size": list(note.size), "flags": {},
             "order": first + k, "mode": 0, "inputs": [], "outputs": [], "title": note.title, "properties": {},
             "widgets_values": [note.text], "color": "#432", "bgcolor": "#653"} for k, note in enumerate(g.notes)]


def _groups(g: Graph, ui_nodes: list[dict]) -> list[dict]:
    """The titled groups (:data:`.notes.GROUPS` order), each around its members, as the frontend saves a group."""
    members: dict[str, list[dict]] = {}
    for item, ui_node in zip([*g.nodes, *g.notes], ui_nodes, strict=True):
        members.setdefault(item.group, []).append(ui_node)
    return [{"id": k + 1, "title": GROUPS[key].title, "bounding": group_bounding(members[key]),
             "color": GROUPS[key].color, "font_size": 24, "flags": {}}
            for k, key in enumerate(key for key in GROUPS if key in members)]


def api_from_ui(ui: dict) -> dict:
    """API prompt of a UI workflow made of :data:`NODE_SPECS` nodes (a tiny graphToPrompt, for tests and checks)."""
    links = {link[0]: link for link in ui["links"]}
    prompt = {}
    for node in sorted(ui["nodes"], key=lambda n: n["id"]):
        if node.get("mode", 0) != 0 or node["type"] == NOTE_TYPE:  # a note is a virtual node: never sent
            continue
        spec = NODE_SPECS[node["type"]]
        values = list(node["widgets_values"])
        linked = {i["name"]: links[i["link"]] for i in node["inputs"] if i.get("link") is not None}
        inputs = {}
        for inp in spec.inputs:
            if inp.widget:
                inputs[inp.name] = values.pop(0)
                del values[:inp.control + inp.upload]
            if inp.name in linked:
                link = linked[inp.name]
                inputs[inp.name] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title") or spec.display_name}}
    return prompt


def with_densepose_video(prompt: dict, video: str = DEMO_VIDEO) -> dict:
    """A copy of an API prompt whose DensePose estimators are replaced by a DensePose video (LoadVideo ``video`` ->
    GetVideoComponents, under the estimator's id, so that its ``[id, 0]`` IMAGE links now carry the video's frames).

    For running the MagicAnimate part of ``magicanimate_from_video`` without comfyui_controlnet_aux (tests).
    """
    out = json.loads(json.dumps(prompt))
    next_id = max(int(k) for k in out) + 1
    for node_id, node in list(out.items()):
        if node["class_type"] == "DensePosePreprocessor":
            loader = str(next_id)
            next_id += 1
            out[loader] = {"class_type": "LoadVideo", "inputs": {"file": video},
                           "_meta": {"title": "DensePose video (stands in for the estimator)"}}
            out[node_id] = {"class_type": "GetVideoComponents", "inputs": {"video": [loader, 0]},
                            "_meta": {"title": node["_meta"]["title"]}}
    return out
