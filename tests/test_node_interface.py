"""The frozen node interface: what saved workflows rely on stays compatible.

Node interface (``tests/node_interface.json``)
    Saved workflows refer to a node by its id, to its inputs by name (widget values by position) and to its outputs
    by slot index and type. ``"nodes"`` records, per node id: ``display_name``, ``required`` and ``optional`` inputs
    (name -> type, in the node's input order) and ``outputs`` (types by slot). The record is append-only: entries
    are never edited or removed, so it keeps every name a saved workflow may hold. The test compares the live
    schemas (``define_schema`` through ComfyUI's V1 info, i.e. what ``/object_info`` serves) with it and fails on:

    * a recorded node id that no longer exists, or a changed display name;
    * a recorded input that is gone, or whose type changed, or that turned from optional to required;
    * a new required input (saved workflows lack it);
    * recorded widgets no longer first and in the same order among the node's widgets (``widgets_values`` is
      positional: new widgets may only come after the recorded ones);
    * a recorded output slot whose type changed, or that is gone;
    * a live node that is not recorded (record it: the test prints the entry to paste).

    Allowed without an entry: new optional inputs (after the recorded widgets, when they are widgets), new outputs
    after the recorded ones, new tooltips/descriptions/categories. Record new optional inputs too, so that they are
    protected from then on.

    An intended break is accepted only with a compatibility entry in ``"compat"``, a list of objects::

        {"node": "<recorded node id>", "change": "<kind>", "since": "<pack version>", "reason": "<why, migration>",
         "input": "<name>"  (input kinds) | "output": <slot>  (output kinds) | "to": "<new name>"  (renames)}

    kinds: ``node_removed``, ``node_renamed`` (``to``: the new id, whose interface is then compared with the
    recorded one), ``display_name_changed``, ``input_removed``, ``input_renamed`` (``to``), ``input_type_changed``,
    ``input_now_required``, ``input_added_required`` (``input``: the new input), ``widgets_reordered``,
    ``output_changed``, ``output_removed``. An entry that excuses nothing fails the test too (a typo must not
    hide a break).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from server_harness import NODE_IDS

from devtools.pack import pack_nodes

REPO = Path(__file__).resolve().parents[1]
INTERFACE = Path(__file__).resolve().parent / "node_interface.json"

COMPAT_KINDS = {
    "node_removed": (), "node_renamed": ("to",), "display_name_changed": (), "input_removed": ("input",),
    "input_renamed": ("input", "to"), "input_type_changed": ("input",), "input_now_required": ("input",),
    "input_added_required": ("input",), "widgets_reordered": (), "output_changed": ("output",),
    "output_removed": ("output",),
}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}




def live_interface() -> dict[str, dict]:
    """node id -> {display_name, required, optional, outputs} of the pack's nodes, as ComfyUI serves them."""
    result = {}
    for node_id, cls in pack_nodes().items():
        info = cls.GET_NODE_INFO_V1()
        entry = {"display_name": info["display_name"]}
        for section in ("required", "optional"):
            specs = info["input"].get(section, {})
            order = (info.get("input_order") or {}).get(section, list(specs))
            entry[section] = {name: ("COMBO" if isinstance(specs[name][0], list) else specs[name][0]) for name in order}
        entry["outputs"] = list(info["output"])
        result[node_id] = entry
    return result


def _widgets(entry: dict) -> list[str]:
    return [n for section in ("required", "optional") for n, t in entry.get(section, {}).items() if t in WIDGET_TYPES]


def interface_problems(recorded: dict[str, dict], live: dict[str, dict], compat: list[dict]) -> list[str]:
    """Every incompatible difference between the recorded and the live interface that no compat entry excuses."""
    problems: list[str] = []
    used: set[int] = set()

    for i, entry in enumerate(compat):
        kind = entry.get("change")
        missing = [k for k in ("node", "change", "since", "reason") if not entry.get(k)]
        if kind not in COMPAT_KINDS:
            problems.append(f"compat[{i}]: unknown change {kind!r} (one of {sorted(COMPAT_KINDS)})")
            continue
        missing += [k for k in COMPAT_KINDS[kind] if entry.get(k) in (None, "")]
        if missing:
            problems.append(f"compat[{i}] ({kind}): missing {missing}")

    def excused(node: str, change: str, **match) -> dict | None:
        for i, entry in enumerate(compat):
            if entry.get("node") == node and entry.get("change") == change and all(
                    entry.get(k) == v for k, v in match.items()):
                used.add(i)
                return entry
        return None

    renamed_to = set()
    for node_id, rec in recorded.items():
        target = node_id
        if node_id not in live:
            if excused(node_id, "node_removed"):
                continue
            entry = excused(node_id, "node_renamed")
            if entry and entry["to"] in live:
                target = entry["to"]
                renamed_to.add(target)
            else:
                problems.append(f"{node_id}: node id removed or renamed (saved workflows use it)")
                continue
        cur = live[target]
        if cur["display_name"] != rec["display_name"] and not excused(node_id, "display_name_changed"):
            problems.append(f"{node_id}: display name {rec['display_name']!r} -> {cur['display_name']!r}")

        cur_types = {**cur.get("required", {}), **cur.get("optional", {})}
        kept_widgets = []
        for section in ("required", "optional"):
            for name, type_ in rec.get(section, {}).items():
                new_name = name
                if name not in cur_types:
                    if excused(node_id, "input_removed", input=name):
                        continue
                    entry = excused(node_id, "input_renamed", input=name)
                    if entry and entry["to"] in cur_types:
                        new_name = entry["to"]
                    else:
                        problems.append(f"{node_id}: input {name!r} removed or renamed")
                        continue
                if cur_types[new_name] != type_ and not excused(node_id, "input_type_changed", input=name):
                    problems.append(f"{node_id}: input {name!r} type {type_} -> {cur_types[new_name]}")
                if (section == "optional" and new_name in cur.get("required", {})
                        and not excused(node_id, "input_now_required", input=name)):
                    problems.append(f"{node_id}: optional input {name!r} became required")
                if type_ in WIDGET_TYPES and cur_types[new_name] in WIDGET_TYPES:
                    kept_widgets.append(new_name)
        recorded_names = {n for s in ("required", "optional") for n in rec.get(s, {})}
        renamed_inputs = {e["to"] for e in compat if e.get("node") == node_id and e.get("change") == "input_renamed"}
        for name in cur.get("required", {}):
            if (name not in recorded_names and name not in renamed_inputs
                    and not excused(node_id, "input_added_required", input=name)):
                problems.append(f"{node_id}: new required input {name!r} (saved workflows lack it; make it optional)")
        live_widgets = _widgets(cur)
        if live_widgets[:len(kept_widgets)] != kept_widgets and not excused(node_id, "widgets_reordered"):
            problems.append(f"{node_id}: widgets {live_widgets} no longer start with the recorded {kept_widgets} "
                            f"(widgets_values of saved workflows are positional)")

        for slot, type_ in enumerate(rec["outputs"]):
            if slot >= len(cur["outputs"]):
                if not excused(node_id, "output_removed", output=slot):
                    problems.append(f"{node_id}: output slot {slot} ({type_}) removed")
            elif cur["outputs"][slot] != type_ and not excused(node_id, "output_changed", output=slot):
                problems.append(f"{node_id}: output slot {slot} type {type_} -> {cur['outputs'][slot]}")

    for node_id in live:
        if node_id not in recorded and node_id not in renamed_to:
            problems.append(f"{node_id}: new node, not recorded; add to {INTERFACE.name} \"nodes\": "
                            f"{json.dumps({node_id: live[node_id]})}")

    for i, entry in enumerate(compat):
        if i not in used and entry.get("change") in COMPAT_KINDS:
            problems.append(f"compat[{i}] excuses nothing (stale or mistyped): {json.dumps(entry)}")
    return problems


@pytest.fixture(scope="module")
def recorded() -> dict:
    data = json.loads(INTERFACE.read_text(encoding="utf-8"))
    assert set(data) <= {"_doc", "nodes", "compat"}, set(data)
    return data


def test_node_interface_is_compatible_with_the_recorded_one(recorded):
    live = live_interface()
    assert set(live) == set(NODE_IDS)
    problems = interface_problems(recorded["nodes"], live, recorded.get("compat", []))
    assert not problems, ("node interface changed incompatibly (see tests/test_registry.py for compat entries):\n  "
                          + "\n  ".join(problems))


def test_interface_check_catches_breaks_and_honours_compat_entries(recorded):
    """The comparison itself, on edited copies of the recorded interface."""
    base = json.loads(json.dumps(recorded["nodes"]))
    node = "MagicAnimatePoseControl"

    def edit(fn) -> dict:
        live = json.loads(json.dumps(base))
        fn(live)
        return live

    def compat(**kw) -> list[dict]:
        return [{"node": node, "since": "9.9.9", "reason": "test", **kw}]

    assert interface_problems(base, base, []) == []

    def rename_strength(n):
        n[node]["required"] = {("pose_strength" if k == "strength" else k): v for k, v in n[node]["required"].items()}

    renamed = edit(rename_strength)
    assert any("'strength' removed or renamed" in p for p in interface_problems(base, renamed, []))
    assert interface_problems(base, renamed, compat(change="input_renamed", input="strength", to="pose_strength")) \
        == []

    gone = edit(lambda n: n.pop(node))
    assert any(f"{node}: node id removed" in p for p in interface_problems(base, gone, []))
    assert interface_problems(base, gone, compat(change="node_removed")) == []

    retyped = edit(lambda n: n[node]["outputs"].__setitem__(0, "LATENT"))
    assert any("output slot 0" in p for p in interface_problems(base, retyped, []))
    assert interface_problems(base, retyped, compat(change="output_changed", output=0)) == []

    new_optional = edit(lambda n: n[node].setdefault("optional", {}).__setitem__("mask", "MASK"))
    assert interface_problems(base, new_optional, []) == []
    new_optional_widget = edit(lambda n: n[node].setdefault("optional", {}).__setitem__("blur", "FLOAT"))
    assert interface_problems(base, new_optional_widget, []) == []
    new_required = edit(lambda n: n[node]["required"].__setitem__("mask", "MASK"))
    assert any("new required input 'mask'" in p for p in interface_problems(base, new_required, []))

    def widget_first(n):
        n[node]["required"] = {"blur": "FLOAT", **n[node]["required"]}
        n[node]["optional"] = {}

    inserted = edit(widget_first)
    problems = interface_problems(base, inserted, [])
    assert any("no longer start with" in p for p in problems) and any("new required" in p for p in problems)

    relabelled = edit(lambda n: n[node].__setitem__("display_name", "Pose"))
    assert any("display name" in p for p in interface_problems(base, relabelled, []))
    extra = edit(lambda n: n.__setitem__("MagicAnimateNew", {"display_name": "x", "required": {}, "outputs": []}))
    assert any("MagicAnimateNew: new node" in p for p in interface_problems(base, extra, []))
    assert any("excuses nothing" in p for p in interface_problems(base, base, compat(change="node_removed")))
    assert any("unknown change" in p for p in interface_problems(base, base, compat(change="oops")))


def test_recorded_interface_matches_the_shipped_workflows(recorded):
    """Every pack node of the shipped UI workflows is recorded, with the recorded widgets in its widgets_values."""
    for path in sorted((REPO / "example_workflows").glob("*.json")):
        for node in json.loads(path.read_text(encoding="utf-8"))["nodes"]:
            if node["type"] in NODE_IDS:
                assert node["type"] in recorded["nodes"], (path.name, node["type"])
                sockets = {i["name"] for i in node["inputs"] if "widget" not in i}
                rec = recorded["nodes"][node["type"]]
                declared = {n for s in ("required", "optional") for n in rec.get(s, {})}
                assert sockets <= declared, (path.name, node["type"], sockets - declared)


#: Words that name a unit or a scale in the tooltip of a number input (pixels, frames, a 0..1 fraction, ...).
UNIT_WORDS = ("pixel", "frame", "fraction", "multiplier", "factor", "number of", "seed")


def test_node_library_text():
    """What the node library and search show: one category, searchable names, descriptions and unit-ful tooltips."""
    for node_id, cls in pack_nodes().items():
        schema = cls.define_schema()
        assert schema.category == "MagicAnimate", node_id
        # Found by searching "MagicAnimate": the frontend searches the node id too (tests/nodes/test_node_search.py).
        assert node_id.startswith("MagicAnimate"), node_id
        assert 60 <= len(schema.description) <= 300, (node_id, schema.description)
        for inp in schema.inputs:
            tip = inp.tooltip or ""
            assert len(tip) >= 25 and tip.rstrip().endswith((".", ")")), (node_id, inp.id, tip)
            if str(inp.get_io_type()) in ("INT", "FLOAT"):
                assert any(w in tip.lower() for w in UNIT_WORDS), f"{node_id}.{inp.id}: no unit in {tip!r}"
