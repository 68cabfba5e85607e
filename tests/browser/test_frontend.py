"""The shipped templates in the real ComfyUI frontend, as a new user meets them: Playwright in Debian's headless
Chromium, a 1920x1080 window at device pixel ratio 1, the frontend's default settings (nothing is written to them).

A ComfyUI server (``tests/server_harness.py``: a fresh copy of the ComfyUI tree, this pack symlinked into
``custom_nodes/``, random-weight full-size model files) serves the frontend that ComfyUI requires (0.3.75:
``comfyui-frontend-package`` 1.32.9, a test requirement; ComfyUI 0.33 via ``$COMFYUI_PATH``: 1.49.6). For each UI
workflow of ``example_workflows/`` the test

1. opens the Templates dialog (the frontend opens it itself on a new user's first visit), picks this pack's category
   and clicks the template's card (its thumbnail must load);
2. checks what the frontend then shows: no missing node type (for ``magicanimate_from_video`` exactly the DensePose
   estimator of comfyui_controlnet_aux, which the tests do not install, and the user is told: frontend 1.32's
   missing-nodes dialog or the error notice of newer ones, then closed), the five MagicAnimate nodes with the
   sockets, widgets and values ``/object_info`` and the file declare, the frontend's UI -> API conversion equal to
   the shipped API file (``workflows/api/<name>.api.json``);
3. checks that it is readable at the view the frontend opens it with: the file's saved view (frontend 1.32), or the
   whole graph fitted into the window (newer frontends; which one the installed frontend does is read from its
   bundle), at or above the frontend's own text level-of-detail threshold (``canvas._lowQualityZoomThreshold``,
   from its default settings); every node title is actually drawn on the canvas (``fillText`` is recorded); every
   node lies in the window clear of the sidebar, the top bars, the Run bar, the minimap and the zoom controls; no
   node overlaps another and no link, as the frontend draws it (its Bezier is recorded), runs behind a node;
4. takes a screenshot of the window (the README picture) and the template thumbnail;
5. sets 64x64 and 2 steps in the widgets, clicks Run, waits for the prompt to finish (``/history``) and checks that
   the ``<video>`` of the SaveVideo output appears in the page at 64x64 (not for ``magicanimate_from_video``: its
   MagicAnimate part runs in ``tests/e2e/test_server.py`` with a DensePose video in place of the estimator).

Screenshots and thumbnails go to the test's temporary dir; with ``MAGICANIMATE_UPDATE_SCREENSHOTS=1`` they also
replace ``docs/screenshots/<workflow>.png`` (the pictures in the README) and ``example_workflows/<workflow>.jpg``
(the shipped ones come from the newest frontend the pack is tested with, ComfyUI 0.33's 1.49.6)::

    MAGICANIMATE_UPDATE_SCREENSHOTS=1 COMFYUI_PATH=/path/to/ComfyUI .venv/bin/python -m pytest -q tests/browser

The browser is Debian's Chromium (``apt-get install -y chromium``; ``bash .ci/run`` installs it); Playwright never
downloads one. Without Chromium the browser tests fail when ``$CI`` is set and are skipped otherwise.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import struct
import time
from pathlib import Path

import pytest
from server_harness import NODE_IDS, PACK_FOLDER, REPO_ROOT, Server, comfyui_server, shared_model_tree, unavailable

import devtools.workflows as bw

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
_FITS_TEMPLATES = re.compile(r"""===\s*[`"']template[`"']\s*\?\s*useLitegraphService\(\)\.fitView\(\)""")
_RESTORES_VIEW = re.compile(r"ds\.offset=\w+\.extra\.ds\.offset")


@functools.cache
def _template_view() -> str:
    """``"fit"`` when the installed frontend fits a template opened from the dialog, ``"saved"`` when it restores the
    saved view."""
    import comfyui_frontend_package

    assets = Path(comfyui_frontend_package.__file__).parent / "static" / "assets"
    fits = restores = False
    for path in sorted(assets.glob("*.js")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if "loadGraphData" in text:
            fits = fits or bool(_FITS_TEMPLATES.search(text))
            restores = restores or bool(_RESTORES_VIEW.search(text))
    assert fits or restores, ("the frontend's loadGraphData neither restores extra.ds nor fits templates as this "
                              "test expects: its view logic changed, revisit the readability check")
    return "fit" if fits else "saved"


#: While ``window.__recordText`` is set, records every string the page draws on a canvas (2D ``fillText``) and every
#: cubic Bezier it builds (``moveTo`` + ``bezierCurveTo`` on a 2D context or a ``Path2D``: the links), in the
#: coordinates the caller passes (the graph's, for the canvas).
_RECORD_TEXT_JS = """(() => {
    window.__drawnText = new Set();
    window.__drawnCurves = [];
    window.__recordText = false;
    const fillText = CanvasRenderingContext2D.prototype.fillText;
    CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
        if (window.__recordText) window.__drawnText.add(String(text));
        return fillText.call(this, text, ...rest);
    };
    for (const proto of [CanvasRenderingContext2D.prototype, Path2D.prototype]) {
        const moveTo = proto.moveTo, bezierCurveTo = proto.bezierCurveTo;
        proto.moveTo = function (x, y) {
            this.__at = [x, y];
            return moveTo.call(this, x, y);
        };
        proto.bezierCurveTo = function (x1, y1, x2, y2, x, y) {
            if (window.__recordText && this.__at) window.__drawnCurves.push([...this.__at, x1, y1, x2, y2, x, y]);
            this.__at = [x, y];
            return bezierCurveTo.call(this, x1, y1, x2, y2, x, y);
        };
    }
})();"""


def _ui_workflow(name: str) -> dict:
    return json.loads(bw.ui_path(name).read_text(encoding="utf-8"))


def _size_of(path: Path) -> tuple[int, int]:
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


# ---------------------------------------------------------------------------------------------------------------------
# README screenshots and template thumbnails (fast: no browser)
# ---------------------------------------------------------------------------------------------------------------------


def test_readme_shows_a_screenshot_of_each_workflow_and_each_template_has_a_thumbnail():
    readme = README.read_text(encoding="utf-8")
    assert UI_WORKFLOWS, "no UI-format workflow in example_workflows/"
    for name in UI_WORKFLOWS:
        rel = f"docs/screenshots/{name}.png"
        assert (REPO_ROOT / rel).is_file(), f"{rel} is missing; run {UPDATE_ENV}=1 pytest tests/browser"
        assert _size_of(REPO_ROOT / rel) == (VIEWPORT["width"], VIEWPORT["height"]), rel  # the whole window
        assert f"]({rel})" in readme, f"README.md does not show {rel}"
        thumb = bw.ui_path(name).with_suffix(".jpg")  # the name the frontend asks for (mediaSubtype "jpg")
        assert thumb.is_file(), f"{thumb} is missing; run {UPDATE_ENV}=1 pytest tests/browser"
        assert _size_of(thumb) == THUMBNAIL_SIZE, thumb
    assert f"{UPDATE_ENV}=1" in readme, "README.md does not say how to regenerate the screenshots"


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures: Chromium, server, browser
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if path is None:
        unavailable("Debian's Chromium is not installed: run `apt-get install -y chromium` "
                     "(`bash .ci/run` does it); the browser tests never download a browser")
    return path


@pytest.fixture(scope="module")
def playwright_api():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the Python package playwright is not installed: pip install -r requirements-test.txt")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def server(chromium, tmp_path_factory):
    """A fresh server with a new user: the frontend's settings are its defaults (the test never writes them)."""
    with comfyui_server(tmp_path_factory.mktemp("browser-server"), models_dir=shared_model_tree(),
                        label="browser") as srv:
        yield srv


@pytest.fixture(scope="module")
def browser(chromium, playwright_api):
    browser = playwright_api.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
    print(f"\n[browser] {chromium}: Chromium {browser.version}")
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def object_info(server) -> dict:
    status, info = server.get("/object_info")
    assert status == 200 and all(n in info for n in NODE_IDS), server.log_tail()
    return info


@pytest.fixture
def page_errors() -> list[str]:
    """Uncaught exceptions of the page (``pageerror`` events)."""
    return []


@pytest.fixture
def page(browser, server, page_errors):
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=DEVICE_SCALE)
    context.add_init_script(_RECORD_TEXT_JS)
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.goto(server.base)
    page.wait_for_function("() => !!(window.app && window.app.graph && window.app.canvas && "
                           "window.app.extensionManager && window.LiteGraph)")
    yield page
    context.close()


# ---------------------------------------------------------------------------------------------------------------------
# In-page helpers
# ---------------------------------------------------------------------------------------------------------------------

_SPY_MISSING_JS = """() => {
    const app = window.app;
    window.__missingNodes = [];
    if (!app.__missingSpy) {
        const original = app.showMissingNodesError;
        app.showMissingNodesError = function (types, ...rest) {
            window.__missingNodes.push(...types.map(t => typeof t === 'string' ? t : (t.type ?? JSON.stringify(t))));
            return original.call(this, types, ...rest);
        };
        app.__missingSpy = true;
    }
}"""

_GRAPH_JS = """() => window.app.graph.nodes.map(n => ({
    id: n.id, type: n.type, title: n.title, has_errors: !!n.has_errors,
    registered: n.type in window.LiteGraph.registered_node_types,
    size: [n.size[0], n.size[1]],
    sockets: (n.inputs || []).filter(i => !i.widget).map(i => ({name: i.name, type: i.type})),
    outputs: (n.outputs || []).map(o => o.type),
    widgets: (n.widgets || []).map(w => ({name: w.name, type: w.type,
                                          value: (typeof w.value === 'object' ? null : w.value)})),
}))"""

#: Titles drawn on the canvas in one full redraw at the current view, and the view itself.
_DRAWN_TITLES_JS = """async () => {
    const canvas = window.app.canvas;
    window.__drawnText.clear();
    window.__drawnCurves.length = 0;
    window.__recordText = true;
    canvas.setDirty(true, true);
    canvas.draw(true, true);
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    window.__recordText = false;
    return {drawn: Array.from(window.__drawnText), curves: window.__drawnCurves.slice(),
            scale: canvas.ds.scale, offset: Array.from(canvas.ds.offset),
            threshold: canvas._lowQualityZoomThreshold, low_quality: canvas.low_quality,
            min_font: canvas.min_font_size_for_lod, dpr: window.devicePixelRatio};
}"""

#: Screen rectangle of every node (title bar included) and of every overlay element.
_RECTS_JS = """(overlays) => {
    const app = window.app, canvas = app.canvas, ds = canvas.ds;
    const r = canvas.canvas.getBoundingClientRect();
    const title = window.LiteGraph.NODE_TITLE_HEIGHT;
    const nodes = app.graph.nodes.map(n => ({
        id: n.id, type: n.type,
        left: r.left + (n.pos[0] + ds.offset[0]) * ds.scale,
        top: r.top + (n.pos[1] - title + ds.offset[1]) * ds.scale,
        right: r.left + (n.pos[0] + n.size[0] + ds.offset[0]) * ds.scale,
        bottom: r.top + (n.pos[1] + n.size[1] + ds.offset[1]) * ds.scale,
    }));
    const covers = [];
    for (const [name, selector] of Object.entries(overlays)) {
        for (const el of document.querySelectorAll(selector)) {
            const b = el.getBoundingClientRect();
            if (b.width > 0 && b.height > 0 && getComputedStyle(el).visibility !== 'hidden')
                covers.push({name, left: b.left, top: b.top, right: b.right, bottom: b.bottom});
        }
    }
    return {nodes, covers, window: [window.innerWidth, window.innerHeight]};
}"""

#: The view the frontend's own ``DragAndScale.fitToBounds`` gives for the whole graph (the bounds ``fitView`` passes:
#: every node's bounding rectangle, 10 units of margin), the current view left as it is.
_FITTED_VIEW_JS = """() => {
    const ds = window.app.canvas.ds;
    const b = [Infinity, Infinity, -Infinity, -Infinity];
    for (const n of window.app.graph.nodes) {
        const r = n.boundingRect;
        b[0] = Math.min(b[0], r[0]); b[1] = Math.min(b[1], r[1]);
        b[2] = Math.max(b[2], r[0] + r[2]); b[3] = Math.max(b[3], r[1] + r[3]);
    }
    const scale = ds.scale, offset = [ds.offset[0], ds.offset[1]];
    ds.fitToBounds([b[0] - 10, b[1] - 10, b[2] - b[0] + 20, b[3] - b[1] + 20]);
    const fit = {scale: ds.scale, offset: [ds.offset[0], ds.offset[1]]};
    ds.scale = scale; ds.offset[0] = offset[0]; ds.offset[1] = offset[1];
    return fit;
}"""

#: The view after the next frame, and the frontend's fit of the graph then.
_OPENED_VIEW_JS = """async () => {
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    const ds = window.app.canvas.ds;
    return {scale: ds.scale, offset: Array.from(ds.offset), fit: (FITTED)()};
}""".replace("FITTED", _FITTED_VIEW_JS)

#: Every node's rectangle (title bar included) and every link's end points, in graph coordinates.
_LAYOUT_JS = """() => {
    const graph = window.app.graph, title = window.LiteGraph.NODE_TITLE_HEIGHT;
    const nodes = graph.nodes.map(n => ({id: n.id, type: n.type, title: n.title,
        rect: [n.pos[0], n.pos[1] - title, n.pos[0] + n.size[0], n.pos[1] + n.size[1]]}));
    const links = [];
    for (const l of (graph.links instanceof Map ? graph.links.values() : Object.values(graph.links))) {
        if (!l) continue;
        const a = graph.getNodeById(l.origin_id), b = graph.getNodeById(l.target_id);
        links.push({id: l.id, from: l.origin_id, to: l.target_id,
                    start: Array.from(a.getOutputPos(l.origin_slot)), end: Array.from(b.getInputPos(l.target_slot))});
    }
    return {nodes, links};
}"""

#: Previews of the loaded inputs are drawn (LoadImage's picture, LoadVideo's first frame) for files that exist.
_PREVIEWS_READY_JS = """(files) => {
    const nodes = window.app.graph.nodes;
    const images = nodes.filter(n => n.type === 'LoadImage')
        .every(n => n.imgs && n.imgs.length && n.imgs.every(i => i.complete && i.naturalWidth > 0));
    const videos = Array.from(document.querySelectorAll('video'))
        .filter(v => files.some(f => decodeURIComponent(v.src || '').includes('filename=' + f)));
    return images && videos.length >= files.length && videos.every(v => v.readyState >= 2);
}"""


def _open_template(page, name: str) -> dict:
    """Open the Templates dialog (unless the frontend opened it for a new user), choose this pack, click ``name``."""
    page.evaluate(_SPY_MISSING_JS)
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
    expected = len(_ui_workflow(name)["nodes"])
    page.wait_for_function("(n) => window.app.graph.nodes.length === n", arg=expected)
    # the view the template opened with, and the frontend's fit of the graph as loaded (previews that load later,
    # such as LoadVideo's, may still resize nodes)
    opened = page.evaluate(_OPENED_VIEW_JS)
    card.wait_for(state="hidden")  # the dialog closed
    return opened


#: Where the frontend tells the user about a loaded workflow's problems (missing node types among them): frontend 1.32
#: calls ``app.showMissingNodesError`` (a dialog); newer frontends show an error notice at the top right instead.
ERROR_NOTICE = '[data-testid="error-overlay"]'
ERROR_NOTICE_CLOSE = '[data-testid="error-overlay-dismiss"]'


def _check_loaded(page, workflow: dict) -> list[dict]:
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
    nodes = page.evaluate(_GRAPH_JS)
    assert len(nodes) == len(workflow["nodes"]), [n["type"] for n in nodes]
    # a node loading a file the server does not have (the user's own video) may be flagged by a newer frontend
    absent = {str(n["id"]) for n in workflow["nodes"] if n["type"] in ("LoadImage", "LoadVideo")
              and n["widgets_values"][0] not in bw.DEMO_INPUTS}
    flagged = {str(n["id"]) for n in nodes if n["has_errors"]} - absent
    unknown = [(n["id"], n["type"]) for n in nodes
               if (not n["registered"] or str(n["id"]) in flagged) and n["type"] not in EXTERNAL]
    assert not unknown, f"nodes the frontend does not know or flags: {unknown}"
    return nodes


def _check_view(opened: dict, view: dict, workflow: dict) -> None:
    """The view is the one the frontend gives a template opened from its dialog (and nothing moved it since): the
    file's ``extra.ds`` (frontend 1.32) or its own fit of the whole graph (newer frontends), whichever its bundle
    says it does."""
    assert view["scale"] == opened["scale"] and view["offset"] == pytest.approx(opened["offset"]), (view, opened)
    if _template_view() == "fit":
        fit = opened["fit"]
        assert view["scale"] == pytest.approx(fit["scale"], rel=1e-3), (opened, fit)
        assert view["offset"] == pytest.approx(fit["offset"], abs=1.0), (opened, fit)
    else:
        saved = workflow["extra"]["ds"]
        assert abs(view["scale"] - saved["scale"]) < 1e-6, (view["scale"], saved)
        assert view["offset"] == pytest.approx(saved["offset"]), (view["offset"], saved)


def _bezier(curve: list[float], steps: int = 48) -> list[tuple[float, float]]:
    x0, y0, x1, y1, x2, y2, x3, y3 = curve
    points = []
    for k in range(1, steps):
        t = k / steps
        u = 1 - t
        points.append((u ** 3 * x0 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t ** 3 * x3,
                       u ** 3 * y0 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t ** 3 * y3))
    return points


#: A link may run this far (graph units) inside the left or right edge of a node: its own end sits on the slot dot,
#: 10 units inside the node's edge.
SLOT_INSET = 12


def _check_layout(page, curves: list[list[float]]) -> None:
    """No two nodes overlap, and no link, as the frontend draws it (the recorded Bezier from the output slot to the
    input slot), runs behind a node."""
    layout = page.evaluate(_LAYOUT_JS)
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
        behind = {n["title"] for n in nodes for x, y in _bezier(drawn[0])
                  if n["rect"][0] + SLOT_INSET < x < n["rect"][2] - SLOT_INSET and n["rect"][1] < y < n["rect"][3]}
        assert not behind, f"link {link['id']} (node {link['from']} -> node {link['to']}) runs behind {sorted(behind)}"


def _check_readable(page, workflow: dict, opened: dict) -> dict:
    """At the view the frontend opens the template with: above the frontend's text threshold, every title drawn,
    nothing hidden under the page's bars, no node over another, no link behind a node."""
    view = page.evaluate(_DRAWN_TITLES_JS)
    assert view["dpr"] == DEVICE_SCALE and view["min_font"] > 0, view  # default settings: level of detail is on
    _check_view(opened, view, workflow)
    assert view["threshold"] > 0.5 and view["scale"] >= view["threshold"] and not view["low_quality"], {
        k: v for k, v in view.items() if k not in ("drawn", "curves")}
    titles = {n.get("title") or bw.NODE_SPECS[n["type"]].display_name for n in workflow["nodes"]}
    not_drawn = sorted(titles - set(view["drawn"]))
    assert not not_drawn, f"node titles not drawn at zoom {view['scale']:.3f}: {not_drawn}"
    rects = page.evaluate(_RECTS_JS, OVERLAYS)
    width, height = rects["window"]
    assert {c["name"] for c in rects["covers"]} >= {"sidebar", "minimap", "Run bar"}, rects["covers"]
    for n in rects["nodes"]:
        assert 0 <= n["left"] and n["right"] <= width and 0 <= n["top"] and n["bottom"] <= height, n
        for c in rects["covers"]:
            overlap = (min(n["right"], c["right"]) - max(n["left"], c["left"]) > 0
                       and min(n["bottom"], c["bottom"]) - max(n["top"], c["top"]) > 0)
            assert not overlap, f"{n['type']} (node {n['id']}) lies under the {c['name']}: {n} {c}"
    _check_layout(page, view["curves"])
    return view


def _expected_interface(info: dict) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(sockets, widgets) of an ``/object_info`` entry, as (name, type) in the order the frontend lays them out."""
    sockets, widgets = [], []
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            kind = "COMBO" if isinstance(spec[0], list) else spec[0]
            (widgets if kind in WIDGET_KINDS else sockets).append((name, kind))
    return sockets, widgets


def _check_pack_nodes(nodes: list[dict], object_info: dict, workflow: dict) -> None:
    """The MagicAnimate nodes of the graph (at least the five of every animation), with the sockets, widgets and
    widget values their definitions call for."""
    by_type = {n["type"]: n for n in nodes}
    core_five = set(NODE_IDS) - {"MagicAnimatePoseAlign", "MagicAnimateMotionLoRA"}  # every graph animates; optional
    assert core_five <= set(by_type), f"missing MagicAnimate nodes: {core_five - set(by_type)}"
    shipped = {str(n["id"]): n for n in workflow["nodes"]}
    for node_id in [i for i in NODE_IDS if i in by_type]:
        node, info = by_type[node_id], object_info[node_id]
        sockets, widgets = _expected_interface(info)
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


def _declared(info: dict) -> set[str]:
    return {name for section in ("required", "optional") for name in info["input"].get(section, {})}


def _default(spec: list) -> object:
    """The value ComfyUI uses for an input ``/object_info`` declares as ``spec`` when a prompt leaves it out."""
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in options:
        return options["default"]
    return spec[0][0] if isinstance(spec[0], list) and spec[0] else None


def _check_prompt_matches_api_file(page, name: str, object_info: dict) -> None:
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
                    "inputs": {k: v for k, v in n["inputs"].items() if k in _declared(info) and not (
                        k not in shipped and k in optional and v == _default(optional[k]))}}
    assert got == strip, (f"graphToPrompt of example_workflows/{name}.json differs from its API file:\n"
                          f"{json.dumps(got, indent=1, sort_keys=True)}")


_SET_OVERLAYS_VISIBILITY_JS = """([overlays, visibility]) => {
    for (const selector of Object.values(overlays))
        for (const el of document.querySelectorAll(selector)) el.style.visibility = visibility;
}"""


def _pictures(page, name: str, tmp_dir: Path, workflow: dict) -> Path:
    """The window as the user sees it (README) and the template thumbnail (the graph, a 512x384 JPEG)."""
    from PIL import Image

    shipped = [n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "LoadVideo"
               and n["widgets_values"][0] == bw.DEMO_VIDEO]  # the user's own video of the third one is not there
    page.wait_for_function(_PREVIEWS_READY_JS, arg=shipped)
    page.wait_for_timeout(500)
    shot = tmp_dir / f"{name}.png"
    page.screenshot(path=str(shot))
    rects = page.evaluate(_RECTS_JS, {})
    left = max(0, min(n["left"] for n in rects["nodes"]) - 16)
    top = max(0, min(n["top"] for n in rects["nodes"]) - 16)
    right = min(VIEWPORT["width"], max(n["right"] for n in rects["nodes"]) + 16)
    bottom = min(VIEWPORT["height"], max(n["bottom"] for n in rects["nodes"]) + 16)
    # the thumbnail shows the graph only: the page's bars, minimap and zoom controls hidden (the margin around the
    # graph can reach under them in a fitted view)
    bare = tmp_dir / f"{name}.graph.png"
    page.evaluate(_SET_OVERLAYS_VISIBILITY_JS, [OVERLAYS, "hidden"])
    try:
        page.wait_for_timeout(200)
        page.screenshot(path=str(bare))
    finally:
        page.evaluate(_SET_OVERLAYS_VISIBILITY_JS, [OVERLAYS, ""])
    with Image.open(bare) as image:
        graph = image.convert("RGB").crop((int(left), int(top), int(right), int(bottom)))
    ratio = THUMBNAIL_SIZE[0] / THUMBNAIL_SIZE[1]
    w, h = graph.size  # pad to 16:9 with the canvas colour, then scale
    canvas_w, canvas_h = max(w, round(h * ratio)), max(h, round(w / ratio))
    padded = Image.new("RGB", (canvas_w, canvas_h), graph.getpixel((2, 2)))
    padded.paste(graph, ((canvas_w - w) // 2, (canvas_h - h) // 2))
    thumb = tmp_dir / f"{name}.jpg"
    padded.resize(THUMBNAIL_SIZE, Image.LANCZOS).save(thumb, quality=85)
    print(f"\n[browser] {name}: screenshot {shot}, thumbnail {thumb}")
    if os.environ.get(UPDATE_ENV) == "1":
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT_DIR / shot.name)
        shutil.copyfile(thumb, bw.ui_path(name).with_suffix(".jpg"))
        print(f"[browser] {name}: updated {SCREENSHOT_DIR / shot.name} and {bw.ui_path(name).with_suffix('.jpg')}")
    return shot


_SET_WIDGETS_JS = """(tiny) => {
    for (const n of window.app.graph.nodes)
        for (const [type, widget, value] of tiny)
            if (n.type === type) {
                const w = n.widgets.find(w => w.name === widget);
                w.value = value;
                w.callback?.(value);
            }
    window.app.canvas.setDirty(true, true);
}"""


def _queue_with_run_button(page) -> dict:
    """Click the Run button; return the server's answer to the frontend's POST /api/prompt (and the prompt)."""
    button = page.locator('[data-testid="queue-button"]')
    button.wait_for(state="visible")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/api/prompt")) as answer:
        button.click()
    response = answer.value
    body = response.json()
    assert response.status == 200 and not body.get("node_errors"), body
    return {"body": body, "prompt": response.request.post_data_json["prompt"]}


# ---------------------------------------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", UI_WORKFLOWS)
def test_template_opens_readable_and_runs(name, page, page_errors, server: Server, object_info, tmp_path):
    started = time.monotonic()
    workflow = _ui_workflow(name)
    external = any(n["type"] in EXTERNAL for n in workflow["nodes"])

    # 1-2. through the Templates dialog: nothing missing (but other packs' nodes), the nodes as declared
    opened = _open_template(page, name)
    nodes = _check_loaded(page, workflow)
    _check_pack_nodes(nodes, object_info, workflow)
    if not external:  # a missing node has no inputs to convert
        _check_prompt_matches_api_file(page, name, object_info)

    # 3-4. readable at the saved zoom, nothing hidden; the pictures
    view = _check_readable(page, workflow, opened)
    _pictures(page, name, tmp_path, workflow)
    print(f"[browser] {name}: zoom {view['scale']:.2f} >= text threshold {view['threshold']:.3f}, "
          f"{len(view['drawn'])} strings drawn")
    if external:
        return

    # 5. tiny run through the Run button
    page.evaluate(_SET_WIDGETS_JS, [[c, w, v] for (c, w), v in TINY.items()])
    queued = _queue_with_run_button(page)
    sent = queued["prompt"]
    for nid, node in sent.items():
        for (class_type, widget), value in TINY.items():
            if node["class_type"] == class_type:
                assert node["inputs"][widget] == value, (nid, node)
    prompt_id = queued["body"]["prompt_id"]
    run_started = time.monotonic()
    entry = server.wait_for_history(prompt_id, RUN_TIMEOUT_S)
    run_s = time.monotonic() - run_started
    assert entry["status"]["status_str"] == "success", (
        f"run failed: {json.dumps(entry['status'].get('messages'), indent=1)[-6000:]}\nlog:\n{server.log_tail()}")
    save_ids = [nid for nid, node in sent.items() if node["class_type"] == "SaveVideo"]
    assert len(save_ids) == 1, sent
    saved = entry["outputs"][save_ids[0]]["images"]
    assert len(saved) == 1 and saved[0]["filename"].endswith(".mp4") and saved[0]["type"] == "output", saved
    filename = saved[0]["filename"]

    # the SaveVideo node shows the result: a <video> playing /view?filename=<the mp4>&type=output
    video = page.locator(f'video[src*="filename={filename}"][src*="type=output"]')
    video.first.wait_for(state="attached", timeout=VIDEO_TIMEOUT_MS)
    page.wait_for_function("(v) => v.readyState >= 1", arg=video.first.element_handle(), timeout=VIDEO_TIMEOUT_MS)
    size = video.first.evaluate("v => [v.videoWidth, v.videoHeight]")
    assert size == [64, 64], f"the output video in the page is {size}, expected 64x64"
    assert page_errors == [], f"uncaught exceptions in the page: {page_errors}"
    server.post("/free", {"unload_models": True, "free_memory": True})  # keep the next workflow's peak low
    print(f"[browser] {name}: ran in {run_s:.1f} s (whole test {time.monotonic() - started:.1f} s)")
