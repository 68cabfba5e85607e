"""What the browser test checks in the frontend's page, and how it opens, pictures and runs a template."""

from __future__ import annotations

import functools
import json
import os
import re
import struct
from pathlib import Path

import pytest
from browser.page_scripts import (
    DRAWN_TITLES_JS,
    GRAPH_JS,
    LAYOUT_JS,
    NOTES_JS,
    OPENED_VIEW_JS,
    RECTS_JS,
    SPY_MISSING_JS,
)
from server_harness import NODE_IDS, PACK_FOLDER, REPO_ROOT

import devtools.workflows as bw
from devtools.workflows.layout import curve_points
from magicanimate.model_layout import FETCH_COMMAND

SCREENSHOT_DIR = REPO_ROOT / "docs" / "screenshots"
README = REPO_ROOT / "README.md"
UPDATE_ENV = "MAGICANIMATE_UPDATE_SCREENSHOTS"


#: Every shipped UI-format workflow (a template of this pack).
UI_WORKFLOWS = sorted(bw.GRAPHS)
#: Node types of other packs, not installed here: the frontend reports them missing.
EXTERNAL = {ct for ct, spec in bw.NODE_SPECS.items() if spec.cnr_id}

VIEWPORT = {"width": 1920, "height": 1080}
DEVICE_SCALE = 1  # the worst case for the frontend's level of detail: its threshold grows as the ratio shrinks
PAGE_TIMEOUT_MS = 60_000
RUN_TIMEOUT_S = 900  # a 2-core machine shared with other jobs can be several times slower than idle
VIDEO_TIMEOUT_MS = 60_000
THUMBNAIL_SIZE = (512, 384)  # the dialog shows it in a square card, object-contain

#: (class_type, widget) -> value: the tiny run (everything else as shipped).
TINY = {
    ("MagicAnimateAppearanceEncode", "width"): 64,
    ("MagicAnimateAppearanceEncode", "height"): 64,
    ("MagicAnimateTemporalSample", "steps"): 2,
    ("EmptyLatentImage", "width"): 64,
    ("EmptyLatentImage", "height"): 64,
    ("KSampler", "steps"): 2,
}

#: Parts of the page drawn over the canvas (default settings): nothing of a workflow may lie under them.
OVERLAYS = {
    "sidebar": ".side-tool-bar-container",
    "workflow tabs": ".workflow-tabs-container",
    "breadcrumb": ".subgraph-breadcrumb",
    "Run bar": ".actionbar-container",
    "minimap": ".minimap-main-container",
    "zoom controls": "[class*=zoom-controls], .p-buttongroup",
}

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]

#: object_info input types the frontend shows as widgets, and the LiteGraph widget types it uses for them.
WIDGET_KINDS = {"INT": {"number", "slider"}, "FLOAT": {"number", "slider"}, "BOOLEAN": {"toggle"},
                "COMBO": {"combo"}, "STRING": {"text", "customtext"}}
UI_ONLY_WIDGETS = {"control_after_generate", "upload"}  # seed control, upload button: no input of the node

#: How the installed frontend sets the view when it opens a workflow from the Templates dialog, read from its bundle
#: (never from its version number): ``loadGraphData`` either restores the file's ``extra.ds`` (frontend 1.32:
#: ``o.extra?.ds?(this.canvas.ds.offset=o.extra.ds.offset,...)``) or, for a template, fits the whole graph into the
#: window (newer frontends: ``...===`template`?useLitegraphService().fitView():...``, which calls
#: ``DragAndScale.fitToBounds`` on the bounds of every node).
FITS_TEMPLATES = re.compile(r"""===\s*[`"']template[`"']\s*\?\s*useLitegraphService\(\)\.fitView\(\)""")
RESTORES_VIEW = re.compile(r"ds\.offset=\w+\.extra\.ds\.offset")


@functools.cache
def template_view() -> str:
    """``"fit"`` when the installed frontend fits a template opened from the dialog, ``"saved"`` when it restores the
    saved view."""
    import comfyui_frontend_package

    assets = Path(comfyui_frontend_package.__file__).parent / "static" / "assets"
    fits = restores = False
    for path in sorted(assets.glob("*.js")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if "loadGraphData" in text:
            fits = fits or bool(FITS_TEMPLATES.search(text))
            restores = restores or bool(RESTORES_VIEW.search(text))
    assert fits or restores, ("the frontend's loadGraphData neither restores extra.ds nor fits templates as this "
                              "test expects: its view logic changed, revisit the readability check")
    return "fit" if fits else "saved"


def ui_workflow(name: str) -> dict:
    return json.loads(bw.ui_path(name).read_text(encoding="utf-8"))


def size_of(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG or JPEG file."""
    data = path.read_bytes()
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return struct.unpack(">II", data[16:24])
    assert data[:2] == b"\xff\xd8", f"{path} is neither PNG nor JPEG"
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    raise AssertionError(f"{path}: no JPEG frame header")


def open_template(page, name: str) -> dict:
    """Open the Templates dialog (unless the frontend opened it for a new user), choose this pack, click ``name``."""
    page.evaluate(SPY_MISSING_JS)
    card = page.locator(f'[data-testid="template-workflow-{name}"]')
    category = page.get_by_text(PACK_FOLDER, exact=True).first  # the dialog's entry for this pack's templates
    try:
        category.wait_for(state="visible", timeout=5_000)
    except Exception:  # not opened by the first-run logic: open it as a user does
        page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        category.wait_for(state="visible")
    category.click()
    card.wait_for(state="visible")
    thumb = card.locator("img").first
    thumb.wait_for(state="visible")
    if bw.ui_path(name).with_suffix(".jpg").is_file():  # the card shows our thumbnail (a blob of the fetched jpg)
        page.wait_for_function("([img, w, h]) => img.complete && img.naturalWidth === w && img.naturalHeight === h",
                               arg=[thumb.element_handle(), *THUMBNAIL_SIZE])
    else:
        assert os.environ.get(UPDATE_ENV) == "1", f"no thumbnail for {name}: run {UPDATE_ENV}=1 pytest tests/browser"
    card.click()
    expected = len(ui_workflow(name)["nodes"])
    page.wait_for_function("(n) => window.app.graph.nodes.length === n", arg=expected)
    # the view the template opened with, and the frontend's fit of the graph as loaded (previews that load later,
    # such as LoadVideo's, may still resize nodes)
    opened = page.evaluate(OPENED_VIEW_JS)
    card.wait_for(state="hidden")  # the dialog closed
    return opened


#: Where the frontend tells the user about a loaded workflow's problems (missing node types among them): frontend 1.32
#: calls ``app.showMissingNodesError`` (a dialog); newer frontends show an error notice at the top right instead.
ERROR_NOTICE = '[data-testid="error-overlay"]'
ERROR_NOTICE_CLOSE = '[data-testid="error-overlay-dismiss"]'


def check_loaded(page, workflow: dict) -> list[dict]:
    """Missing node types are exactly the other packs' nodes, and the user is told; everything else is registered
    and error-free."""
    page.wait_for_timeout(500)  # let a missing-nodes dialog or error notice render
    expected_missing = sorted({n["type"] for n in workflow["nodes"] if n["type"] in EXTERNAL})
    unregistered = page.evaluate("() => window.app.graph.nodes.map(n => n.type)"
                                 ".filter(t => !(t in window.LiteGraph.registered_node_types))")
    assert sorted(set(unregistered)) == expected_missing, f"node types the frontend does not have: {unregistered}"
    reported = page.evaluate("() => window.__missingNodes")
    notice = page.locator(ERROR_NOTICE)
    if not expected_missing:
        assert reported == [], f"the frontend reports missing node types: {reported}"
        assert page.locator(".comfy-missing-nodes").count() == 0, "the missing-nodes dialog is open"
        assert not notice.is_visible(), f"the frontend shows an error notice: {notice.inner_text()}"
    else:  # the user is told (the dialog of frontend 1.32, or the error notice); close it as they would
        assert sorted(set(reported)) == expected_missing or notice.is_visible(), (
            f"the user is not told about the missing node types {expected_missing} (reported: {reported})")
        if notice.is_visible():
            page.locator(ERROR_NOTICE_CLOSE).click()
            notice.wait_for(state="hidden")
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    nodes = page.evaluate(GRAPH_JS)
    assert len(nodes) == len(workflow["nodes"]), [n["type"] for n in nodes]
    # a node loading a file the server does not have (the user's own video) may be flagged by a newer frontend
    absent = {str(n["id"]) for n in workflow["nodes"] if n["type"] in ("LoadImage", "LoadVideo")
              and n["widgets_values"][0] not in bw.DEMO_INPUTS}
    flagged = {str(n["id"]) for n in nodes if n["has_errors"]} - absent
    unknown = [(n["id"], n["type"]) for n in nodes
               if (not n["registered"] or str(n["id"]) in flagged) and n["type"] not in EXTERNAL]
    assert not unknown, f"nodes the frontend does not know or flags: {unknown}"
    return nodes


def check_view(opened: dict, view: dict, workflow: dict) -> None:
    """The view is the one the frontend gives a template opened from its dialog (and nothing moved it since): the
    file's ``extra.ds`` (frontend 1.32) or its own fit of the whole graph (newer frontends), whichever its bundle
    says it does."""
    assert view["scale"] == opened["scale"] and view["offset"] == pytest.approx(opened["offset"]), (view, opened)
    if template_view() == "fit":
        fit = opened["fit"]
        assert view["scale"] == pytest.approx(fit["scale"], rel=1e-3), (opened, fit)
        assert view["offset"] == pytest.approx(fit["offset"], abs=1.0), (opened, fit)
    else:
        saved = workflow["extra"]["ds"]
        assert abs(view["scale"] - saved["scale"]) < 1e-6, (view["scale"], saved)
        assert view["offset"] == pytest.approx(saved["offset"]), (view["offset"], saved)


#: A link may run this far (graph units) inside the left or right edge of a node: its own end sits on the slot dot,
#: 10 units inside the node's edge.
SLOT_INSET = 12


def check_layout(page, curves: list[list[float]]) -> None:
    """No two nodes overlap, and no link, as the frontend draws it (the recorded Bezier from the output slot to the
    input slot), runs behind a node."""
    layout = page.evaluate(LAYOUT_JS)
    nodes = layout["nodes"]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            (al, at, ar, ab), (bl, bt, br, bb) = a["rect"], b["rect"]
            assert min(ar, br) <= max(al, bl) or min(ab, bb) <= max(at, bt), f"nodes overlap: {a} {b}"
    assert layout["links"], "the graph has no links"
    for link in layout["links"]:
        drawn = [c for c in curves if abs(c[0] - link["start"][0]) < 1.5 and abs(c[1] - link["start"][1]) < 1.5
                 and abs(c[6] - link["end"][0]) < 1.5 and abs(c[7] - link["end"][1]) < 1.5]
        assert drawn, f"link {link} was not drawn as a spline from its output to its input: revisit this check"
        behind = {n["title"] for n in nodes for x, y in curve_points(drawn[0])
                  if n["rect"][0] + SLOT_INSET < x < n["rect"][2] - SLOT_INSET and n["rect"][1] < y < n["rect"][3]}
        assert not behind, f"link {link['id']} (node {link['from']} -> node {link['to']}) runs behind {sorted(behind)}"


def check_readable(page, workflow: dict, opened: dict) -> dict:
    """At the view the frontend opens the template with: above the frontend's text threshold, every title drawn,
    nothing hidden under the page's bars, no node over another, no link behind a node."""
    view = page.evaluate(DRAWN_TITLES_JS)
    assert view["dpr"] == DEVICE_SCALE and view["min_font"] > 0, view  # default settings: level of detail is on
    check_view(opened, view, workflow)
    assert view["threshold"] > 0.5 and view["scale"] >= view["threshold"] and not view["low_quality"], {
        k: v for k, v in view.items() if k not in ("drawn", "curves")}
    titles = {n.get("title") or bw.NODE_SPECS[n["type"]].display_name for n in workflow["nodes"]}
    groups = {g["title"] for g in workflow.get("groups", [])}
    assert groups, "the template has no groups"
    not_drawn = sorted((titles | groups) - set(view["drawn"]))
    assert not not_drawn, f"node or group titles not drawn at zoom {view['scale']:.3f}: {not_drawn}"
    rects = page.evaluate(RECTS_JS, OVERLAYS)
    width, height = rects["window"]
    notes = [n for n in page.evaluate(NOTES_JS) if n["visible"] and FETCH_COMMAND in n["text"]]
    assert len(notes) == sum(n["type"] == "MarkdownNote" for n in workflow["nodes"]) == 1, notes
    for n in notes:  # the note's text is shown, in the window, under none of the page's bars
        assert 0 <= n["left"] and n["right"] <= width and 0 <= n["top"] and n["bottom"] <= height, n
        for c in rects["covers"]:
            assert (min(n["right"], c["right"]) <= max(n["left"], c["left"])
                    or min(n["bottom"], c["bottom"]) <= max(n["top"], c["top"])), f"the note lies under {c}"
    assert {c["name"] for c in rects["covers"]} >= {"sidebar", "minimap", "Run bar"}, rects["covers"]
    for n in rects["nodes"]:
        assert 0 <= n["left"] and n["right"] <= width and 0 <= n["top"] and n["bottom"] <= height, n
        for c in rects["covers"]:
            overlap = (min(n["right"], c["right"]) - max(n["left"], c["left"]) > 0
                       and min(n["bottom"], c["bottom"]) - max(n["top"], c["top"]) > 0)
            assert not overlap, f"{n['type']} (node {n['id']}) lies under the {c['name']}: {n} {c}"
    check_layout(page, view["curves"])
    return view


def expected_interface(info: dict) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(sockets, widgets) of an ``/object_info`` entry, as (name, type) in the order the frontend lays them out."""
    sockets, widgets = [], []
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            kind = "COMBO" if isinstance(spec[0], list) else spec[0]
            (widgets if kind in WIDGET_KINDS else sockets).append((name, kind))
    return sockets, widgets


def check_pack_nodes(nodes: list[dict], object_info: dict, workflow: dict) -> None:
    """The MagicAnimate nodes of the graph (at least the five of every animation), with the sockets, widgets and
    widget values their definitions call for."""
    by_type = {n["type"]: n for n in nodes}
    optional = {"MagicAnimatePoseAlign", "MagicAnimateMotionLoRA", "MagicAnimateSaveVideo"}
    core_five = set(NODE_IDS) - optional  # every graph animates; the others are optional
    assert core_five <= set(by_type), f"missing MagicAnimate nodes: {core_five - set(by_type)}"
    shipped = {str(n["id"]): n for n in workflow["nodes"]}
    for node_id in [i for i in NODE_IDS if i in by_type]:
        node, info = by_type[node_id], object_info[node_id]
        sockets, widgets = expected_interface(info)
        assert [s["name"] for s in node["sockets"]] == [name for name, _ in sockets], (node_id, node["sockets"])
        assert node["outputs"] == info["output"], (node_id, node["outputs"])
        shown = [w for w in node["widgets"] if w["name"] not in UI_ONLY_WIDGETS]
        assert [w["name"] for w in shown] == [name for name, _ in widgets], (node_id, node["widgets"])
        for w, (name, kind) in zip(shown, widgets, strict=True):
            assert w["type"] in WIDGET_KINDS[kind], (node_id, name, w["type"], kind)
        # every widget shows the value the file stores for it (positional widgets_values read as intended)
        stored = shipped[str(node["id"])]["widgets_values"]
        assert [w["value"] for w in node["widgets"]] == stored, (node_id, node["widgets"], stored)
        assert node["size"][0] > 0 and node["size"][1] > 0


def declared(info: dict) -> set[str]:
    return {name for section in ("required", "optional") for name in info["input"].get(section, {})}


def default(spec: list) -> object:
    """The value ComfyUI uses for an input ``/object_info`` declares as ``spec`` when a prompt leaves it out."""
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in options:
        return options["default"]
    return spec[0][0] if isinstance(spec[0], list) and spec[0] else None


def check_prompt_matches_api_file(page, name: str, object_info: dict) -> None:
    """The frontend's UI -> API conversion of the loaded graph is the shipped API file.

    Inputs the node does not declare are left out of the comparison: the frontend sends some UI-only widget values
    (LoadVideo's ``"video-preview": ""``), which ComfyUI ignores. So is an optional input the API file does not set
    when the frontend sends its declared default: a newer ComfyUI adds such inputs to core nodes (CreateVideo's
    ``bit_depth``), and ComfyUI uses the same default for a prompt that leaves it out.
    """
    prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    api = json.loads(bw.api_path(name).read_text(encoding="utf-8"))
    strip = {nid: {"class_type": n["class_type"], "inputs": n["inputs"]} for nid, n in api.items()}
    got = {}
    for nid, n in prompt.items():
        info = object_info[n["class_type"]]
        optional = info["input"].get("optional", {})
        shipped = api.get(nid, {}).get("inputs", {})
        got[nid] = {"class_type": n["class_type"],
                    "inputs": {k: v for k, v in n["inputs"].items() if k in declared(info) and not (
                        k not in shipped and k in optional and v == default(optional[k]))}}
    assert got == strip, (f"graphToPrompt of example_workflows/{name}.json differs from its API file:\n"
                          f"{json.dumps(got, indent=1, sort_keys=True)}")
