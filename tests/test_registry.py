"""Registry readiness: pyproject.toml metadata, a frozen node interface, and install by ``git clone``.

pyproject.toml
    ``[project]`` name/version/license/description/requires-python and ``[tool.comfy]`` PublisherId, DisplayName,
    Icon and requires-comfyui, checked with tomllib and with ComfyUI's own parser (``comfy_config``).

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

Install (slow)
    ``git clone`` of this repository's committed HEAD into a fresh ComfyUI copy's ``custom_nodes/``,
    ``python -m pip install -r requirements.txt`` (a no-op: the pack needs nothing ComfyUI lacks), then a real
    ComfyUI server lists the five nodes from the clone.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from server_harness import NODE_IDS, PACK_FOLDER, comfyui_server

from devtools.comfy_env import comfyui_source_dir, prepare_comfyui_copy
from devtools.pack import pack_nodes

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser as the tomli backport
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
INTERFACE = Path(__file__).resolve().parent / "node_interface.json"
MIN_COMFYUI = (0, 3, 75)

COMPAT_KINDS = {
    "node_removed": (), "node_renamed": ("to",), "display_name_changed": (), "input_removed": ("input",),
    "input_renamed": ("input", "to"), "input_type_changed": ("input",), "input_now_required": ("input",),
    "input_added_required": ("input",), "widgets_reordered": (), "output_changed": ("output",),
    "output_removed": ("output",),
}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


# ---------------------------------------------------------------------------------------------------------------------
# pyproject.toml
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pyproject() -> dict:
    with PYPROJECT.open("rb") as f:
        return tomllib.load(f)


def test_project_metadata(pyproject):
    project = pyproject["project"]
    # Comfy Registry node id: lowercase letters, digits, - and _ (the id `comfy node install` takes)
    assert re.fullmatch(r"[a-z][a-z0-9_-]{0,99}", project["name"]), project["name"]
    assert project["name"] == "comfyui-magicanimate"
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), f"version must be semver X.Y.Z: {project['version']}"
    desc = project["description"]
    assert 20 <= len(desc) <= 300 and "\n" not in desc, desc
    assert "MagicAnimate" in desc and "ComfyUI" in desc
    # GPL-3.0 like ComfyUI: the file it points to is there and is the GPLv3
    license_file = REPO / project["license"]["file"]
    assert license_file.is_file(), license_file
    text = license_file.read_text(encoding="utf-8")
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3" in text
    assert (REPO / project["readme"]).is_file()
    # requires-python admits the Python that runs ComfyUI here, and ComfyUI's own floor (3.10)
    spec = project["requires-python"]
    assert re.fullmatch(r">=\s*3\.\d+", spec), spec
    floor = _version_tuple(spec)
    assert floor <= (3, 10) and sys.version_info[:2] >= floor, spec
    # no runtime dependencies, same as requirements.txt (installing must never touch torch & co)
    assert project["dependencies"] == []
    reqs = [ln.strip() for ln in (REPO / "requirements.txt").read_text().splitlines()]
    assert [ln for ln in reqs if ln and not ln.startswith("#")] == []
    repo_url = project["urls"]["Repository"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repo_url), repo_url


def test_tool_comfy_section(pyproject):
    comfy = pyproject["tool"]["comfy"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"]), comfy["PublisherId"]
    assert comfy["DisplayName"].strip() and "MagicAnimate" in comfy["DisplayName"]
    icon = comfy["Icon"]
    assert isinstance(icon, str) and (icon == "" or re.fullmatch(r"https://\S+\.(png|jpg|jpeg|svg|gif|webp)", icon)), \
        f"Icon must be empty or an https URL of an image: {icon!r}"
    required = comfy["requires-comfyui"]
    assert required == ">=0.3.75", required
    # the ComfyUI the suite runs against satisfies it
    version_file = comfyui_source_dir() / "comfyui_version.py"
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_file.read_text())
    assert match and _version_tuple(match.group(1)) >= _version_tuple(required), match and match.group(1)


def test_comfyui_reads_the_pyproject_like_the_registry(pyproject):
    """ComfyUI's own parser (used when it loads the pack) reads the same name, version and publisher."""
    from comfy_config import config_parser

    config = config_parser.extract_node_configuration(str(REPO))
    assert config is not None
    assert config.project.name == pyproject["project"]["name"]
    assert config.project.version == pyproject["project"]["version"]
    assert config.tool_comfy.publisher_id == pyproject["tool"]["comfy"]["PublisherId"]
    assert config.tool_comfy.display_name == pyproject["tool"]["comfy"]["DisplayName"]
    assert config.project.urls.repository == pyproject["project"]["urls"]["Repository"]


def test_registry_id_matches_workflows_and_readme(pyproject):
    """The UI workflows tag the pack's nodes with ``cnr_id`` = the registry id; the README's install line uses it."""
    name = pyproject["project"]["name"]
    for path in sorted((REPO / "example_workflows").glob("*.json")):
        ui = json.loads(path.read_text(encoding="utf-8"))
        ids = {n["properties"]["cnr_id"] for n in ui["nodes"] if n["type"] in NODE_IDS}
        assert ids == {name}, (path.name, ids)
    assert f"comfy node install {name}" in (REPO / "README.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------------
# Node interface
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# Install by git clone (slow)
# ---------------------------------------------------------------------------------------------------------------------


def _git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"git {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout.strip()


@pytest.mark.slow
def test_git_clone_and_pip_install_on_a_fresh_comfyui(tmp_path):
    if shutil.which("git") is None:
        pytest.fail("git is needed to test the git-clone install")
    head = _git("rev-parse", "HEAD", cwd=REPO)
    comfy = prepare_comfyui_copy(tmp_path / "ComfyUI")
    pack = comfy / "custom_nodes" / PACK_FOLDER
    assert not pack.exists()

    # 1. the README's install: git clone into custom_nodes (the committed HEAD of this checkout)
    _git("clone", "--quiet", str(REPO), str(pack), cwd=tmp_path)
    assert _git("rev-parse", "HEAD", cwd=pack) == head
    assert (pack / "__init__.py").is_file() and (pack / "pyproject.toml").is_file()

    # 2. pip install -r requirements.txt in ComfyUI's environment: succeeds and installs nothing
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                          "-r", "requirements.txt"], cwd=pack, capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, f"pip install -r requirements.txt failed:\n{pip.stdout}\n{pip.stderr}"
    assert "Successfully installed" not in pip.stdout, pip.stdout

    # 3. ComfyUI starts with the cloned pack and serves its five nodes
    with comfyui_server(tmp_path, comfy_dir=comfy, link_pack=False, label="install") as srv:
        status, info = srv.get("/object_info")
        assert status == 200
        missing = [n for n in NODE_IDS if n not in info]
        assert not missing, f"nodes not registered: {missing}; log:\n{srv.log_tail()}"
        for node_id in NODE_IDS:
            assert info[node_id]["python_module"] == f"custom_nodes.{PACK_FOLDER}", info[node_id]["python_module"]
            assert info[node_id]["category"] == "MagicAnimate"
        log = srv.log_path.read_text(errors="replace")
        # "Import times for custom nodes:" has one line per pack, "(IMPORT FAILED)" on failure
        timing = [ln for ln in log.splitlines() if "seconds" in ln and ln.rstrip().endswith(f"/{PACK_FOLDER}")]
        assert len(timing) == 1 and "IMPORT FAILED" not in timing[0], srv.log_tail()
        assert "Unable to parse pyproject.toml" not in log, srv.log_tail()
