"""The shipped UI-format workflows in the real ComfyUI frontend, driven by Playwright in Debian's headless Chromium.

A ComfyUI server (``tests/server_harness.py``: a fresh copy of the ComfyUI tree, this pack symlinked into
``custom_nodes/``, random-weight full-size model files) serves the frontend that ComfyUI requires
(``comfyui-frontend-package`` 1.32.9, a test requirement). For each ``workflows/*.json`` (UI format) the test

1. loads the file as shipped through ``app.loadGraphData`` and checks that the frontend reports no missing node
   type (its "missing nodes" dialog is spied on and looked for), that every node type is registered, that the five
   MagicAnimate nodes are there with the sockets and widgets ``/object_info`` declares, widget values included,
   and that the frontend's own UI -> API conversion (``app.graphToPrompt``) gives exactly the shipped ``.api.json``;
2. takes a screenshot of the whole graph (1600x900 viewport at device scale 2, focus mode, fitted to the graph);
3. loads it again with tiny settings patched into ``widgets_values`` (64x64, 2 steps), clicks the Run button,
   waits for the prompt to finish (``/history``) and checks that the ``<video>`` of the SaveVideo output appears
   in the page and decodes at 64x64.

Screenshots go to the test's temporary dir; with ``MAGICANIMATE_UPDATE_SCREENSHOTS=1`` they also replace
``docs/screenshots/<workflow>.png`` (the pictures in the README)::

    MAGICANIMATE_UPDATE_SCREENSHOTS=1 .venv/bin/python -m pytest -q tests/browser

The browser is Debian's Chromium (``apt-get install -y chromium``; ``bash .ci/run`` installs it); Playwright never
downloads one. Without Chromium the browser tests fail when ``$CI`` is set and are skipped otherwise.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import struct
import sys
import time
from pathlib import Path

import pytest
from server_harness import NODE_IDS, REPO_ROOT, Server, comfyui_server, shared_model_tree

WORKFLOWS_DIR = REPO_ROOT / "workflows"
SCREENSHOT_DIR = REPO_ROOT / "docs" / "screenshots"
README = REPO_ROOT / "README.md"
UPDATE_ENV = "MAGICANIMATE_UPDATE_SCREENSHOTS"

#: Every shipped UI-format workflow (the ``.api.json`` files are the API twins).
UI_WORKFLOWS = sorted(p.name[:-len(".json")] for p in WORKFLOWS_DIR.glob("*.json")
                      if not p.name.endswith(".api.json"))

VIEWPORT = {"width": 1600, "height": 900}
DEVICE_SCALE = 2  # screenshots are 3200 px wide: node text stays legible when the picture is opened full size
PAGE_TIMEOUT_MS = 60_000
RUN_TIMEOUT_S = 300
VIDEO_TIMEOUT_MS = 60_000

#: (class_type, widget) -> value: the tiny run (everything else as shipped).
TINY = {
    ("MagicAnimateAppearanceEncode", "width"): 64,
    ("MagicAnimateAppearanceEncode", "height"): 64,
    ("MagicAnimateTemporalSample", "steps"): 2,
    ("EmptyLatentImage", "width"): 64,
    ("EmptyLatentImage", "height"): 64,
    ("KSampler", "steps"): 2,
}

#: Frontend settings for the test user: no first-run template dialog, no minimap / canvas info / canvas menu over
#: the graph, full node detail at any zoom (the screenshots are taken zoomed out). The missing-node warning stays on.
SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.ShowMissingNodesWarning": True,
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
    "Comfy.Graph.CanvasMenu": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,
}

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]

#: object_info input types the frontend shows as widgets, and the LiteGraph widget types it uses for them.
WIDGET_KINDS = {"INT": {"number", "slider"}, "FLOAT": {"number", "slider"}, "BOOLEAN": {"toggle"},
                "COMBO": {"combo"}, "STRING": {"text", "customtext"}}
UI_ONLY_WIDGETS = {"control_after_generate", "upload"}  # seed control, upload button: no input of the node


def _load_build_workflows():
    name = "build_workflows"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, WORKFLOWS_DIR / "build_workflows.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


bw = _load_build_workflows()


def _ui_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS_DIR / f"{name}.json").read_text(encoding="utf-8"))


def _tiny(workflow: dict) -> dict:
    """The UI workflow with :data:`TINY` patched into its nodes' ``widgets_values``."""
    wf = copy.deepcopy(workflow)
    for node in wf["nodes"]:
        for (class_type, widget), value in TINY.items():
            if node["type"] == class_type:
                node["widgets_values"][bw.widget_index(class_type, widget)] = value
    return wf


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


# ---------------------------------------------------------------------------------------------------------------------
# README screenshots (fast: no browser)
# ---------------------------------------------------------------------------------------------------------------------


def test_readme_shows_a_screenshot_of_each_workflow():
    readme = README.read_text(encoding="utf-8")
    assert UI_WORKFLOWS, "no UI-format workflow in workflows/"
    for name in UI_WORKFLOWS:
        rel = f"docs/screenshots/{name}.png"
        assert (REPO_ROOT / rel).is_file(), f"{rel} is missing; run {UPDATE_ENV}=1 pytest tests/browser"
        width, height = _png_size(REPO_ROOT / rel)
        assert width >= 1600 and height >= 300, (rel, width, height)
        assert f"]({rel})" in readme, f"README.md does not show {rel}"
    assert f"{UPDATE_ENV}=1" in readme, "README.md does not say how to regenerate the screenshots"


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures: Chromium, server, browser
# ---------------------------------------------------------------------------------------------------------------------


def _unavailable(message: str):
    """Fail in CI (``$CI`` set), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if path is None:
        _unavailable("Debian's Chromium is not installed: run `apt-get install -y chromium` "
                     "(`bash .ci/run` does it); the browser tests never download a browser")
    return path


@pytest.fixture(scope="module")
def playwright_api():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the Python package playwright is not installed: pip install -r requirements-test.txt")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def server(chromium, tmp_path_factory):
    with comfyui_server(tmp_path_factory.mktemp("browser-server"), models_dir=shared_model_tree(),
                        label="browser") as srv:
        status, _ = srv.post("/settings", SETTINGS)
        assert status == 200, srv.log_tail()
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
    context.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")  # the "Nodes 2.0" banner
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

_LOAD_JS = """async ({workflow, name}) => {
    const app = window.app;
    const missing = [];
    const original = app.showMissingNodesError;
    app.showMissingNodesError = function (types, ...rest) {
        missing.push(...types.map(t => typeof t === 'string' ? t : (t.type ?? JSON.stringify(t))));
        return original.call(this, types, ...rest);
    };
    try {
        await app.loadGraphData(workflow, true, true, name);
    } finally {
        app.showMissingNodesError = original;
    }
    return missing;
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

_FIT_JS = """(margin) => {
    const app = window.app, canvas = app.canvas, ds = canvas.ds;
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const n of app.graph.nodes) {
        const [x, y, w, h] = n.boundingRect;
        x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h);
    }
    ds.fitToBounds([x0, y0, x1 - x0, y1 - y0], {zoom: 0.97});
    canvas.setDirty(true, true);
    const r = canvas.canvas.getBoundingClientRect();
    const sx = v => r.left + (v + ds.offset[0]) * ds.scale, sy = v => r.top + (v + ds.offset[1]) * ds.scale;
    const left = Math.max(r.left, sx(x0) - margin), top = Math.max(r.top, sy(y0) - margin);
    const right = Math.min(r.right, sx(x1) + margin), bottom = Math.min(r.bottom, sy(y1) + margin);
    return {scale: ds.scale, clip: {x: left, y: top, width: right - left, height: bottom - top}};
}"""

#: Previews of the loaded inputs are drawn (LoadImage's picture, LoadVideo's first frame).
_PREVIEWS_READY_JS = """() => {
    const nodes = window.app.graph.nodes;
    const images = nodes.filter(n => n.type === 'LoadImage')
        .every(n => n.imgs && n.imgs.length && n.imgs.every(i => i.complete && i.naturalWidth > 0));
    const wanted = nodes.filter(n => n.type === 'LoadVideo').length;
    const videos = Array.from(document.querySelectorAll('video'));
    return images && videos.length >= wanted && videos.every(v => v.readyState >= 2);
}"""


def _load(page, workflow: dict, name: str) -> list[dict]:
    """Load a UI workflow through the frontend; assert nothing is reported missing; return the graph's nodes."""
    missing = page.evaluate(_LOAD_JS, {"workflow": workflow, "name": name})
    assert missing == [], f"the frontend reports missing node types: {missing}"
    page.wait_for_timeout(300)  # let a (wrongly) opened dialog render before looking for it
    assert page.locator(".comfy-missing-nodes").count() == 0, "the missing-nodes dialog is open"
    nodes = page.evaluate(_GRAPH_JS)
    assert len(nodes) == len(workflow["nodes"]), [n["type"] for n in nodes]
    unknown = [(n["id"], n["type"]) for n in nodes if not n["registered"] or n["has_errors"]]
    assert not unknown, f"nodes the frontend does not know: {unknown}"
    return nodes


def _expected_interface(info: dict) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(sockets, widgets) of an ``/object_info`` entry, as (name, type) in the order the frontend lays them out."""
    sockets, widgets = [], []
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            kind = "COMBO" if isinstance(spec[0], list) else spec[0]
            (widgets if kind in WIDGET_KINDS else sockets).append((name, kind))
    return sockets, widgets


def _check_pack_nodes(nodes: list[dict], object_info: dict, workflow: dict) -> None:
    """The five MagicAnimate nodes, with the sockets, widgets and widget values their definitions call for."""
    by_type = {n["type"]: n for n in nodes}
    assert set(NODE_IDS) <= set(by_type), f"missing MagicAnimate nodes: {set(NODE_IDS) - set(by_type)}"
    shipped = {n["id"]: n for n in workflow["nodes"]}
    for node_id in NODE_IDS:
        node, info = by_type[node_id], object_info[node_id]
        sockets, widgets = _expected_interface(info)
        assert [s["name"] for s in node["sockets"]] == [name for name, _ in sockets], (node_id, node["sockets"])
        assert node["outputs"] == info["output"], (node_id, node["outputs"])
        shown = [w for w in node["widgets"] if w["name"] not in UI_ONLY_WIDGETS]
        assert [w["name"] for w in shown] == [name for name, _ in widgets], (node_id, node["widgets"])
        for w, (name, kind) in zip(shown, widgets, strict=True):
            assert w["type"] in WIDGET_KINDS[kind], (node_id, name, w["type"], kind)
        # every widget shows the value the file stores for it (positional widgets_values read as intended)
        stored = shipped[node["id"]]["widgets_values"]
        assert [w["value"] for w in node["widgets"]] == stored, (node_id, node["widgets"], stored)
        assert node["size"][0] > 0 and node["size"][1] > 0


def _declared(info: dict) -> set[str]:
    return {name for section in ("required", "optional") for name in info["input"].get(section, {})}


def _check_prompt_matches_api_file(page, name: str, object_info: dict) -> None:
    """The frontend's UI -> API conversion of the loaded graph is the shipped ``.api.json``.

    Inputs the node does not declare are left out of the comparison: the frontend sends some UI-only widget values
    (LoadVideo's ``"video-preview": ""``), which ComfyUI ignores.
    """
    prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    api = json.loads((WORKFLOWS_DIR / f"{name}.api.json").read_text(encoding="utf-8"))
    strip = {nid: {"class_type": n["class_type"], "inputs": n["inputs"]} for nid, n in api.items()}
    got = {nid: {"class_type": n["class_type"],
                 "inputs": {k: v for k, v in n["inputs"].items() if k in _declared(object_info[n["class_type"]])}}
           for nid, n in prompt.items()}
    assert got == strip, (f"graphToPrompt of workflows/{name}.json differs from {name}.api.json:\n"
                          f"{json.dumps(got, indent=1, sort_keys=True)}")


def _screenshot(page, name: str, tmp_dir: Path) -> Path:
    """Whole-graph screenshot in focus mode; copied over docs/screenshots/ with MAGICANIMATE_UPDATE_SCREENSHOTS=1."""
    page.evaluate("() => window.app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
    page.wait_for_function("() => window.app.extensionManager.focusMode === true")
    page.wait_for_timeout(300)  # the canvas resizes to the whole window
    page.wait_for_function(_PREVIEWS_READY_JS)
    fit = page.evaluate(_FIT_JS, 12)
    page.wait_for_timeout(500)  # two or more frames at the new transform
    path = tmp_dir / f"{name}.png"
    page.screenshot(path=str(path), clip=fit["clip"])
    print(f"\n[browser] {name}: screenshot {path} (graph zoom {fit['scale']:.2f})")
    if os.environ.get(UPDATE_ENV) == "1":
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOT_DIR / path.name)
        print(f"[browser] {name}: updated {SCREENSHOT_DIR / path.name}")
    page.evaluate("() => window.app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
    page.wait_for_function("() => window.app.extensionManager.focusMode === false")
    return path


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
def test_workflow_loads_runs_and_shows_its_video(name, page, page_errors, server: Server, object_info,
                                                 tmp_path):
    started = time.monotonic()
    workflow = _ui_workflow(name)

    # 1. as shipped: nothing missing, the five nodes with their widgets, same prompt as the API file
    nodes = _load(page, workflow, name)
    _check_pack_nodes(nodes, object_info, workflow)
    _check_prompt_matches_api_file(page, name, object_info)

    # 2. screenshot of the loaded graph
    shot = _screenshot(page, name, tmp_path)
    width, height = _png_size(shot)
    assert width >= 1600 and height >= 300, (width, height)

    # 3. tiny run through the Run button
    tiny = _tiny(workflow)
    nodes = _load(page, tiny, f"{name}_tiny")
    for node in nodes:
        values = [w["value"] for w in node["widgets"]]
        for (class_type, widget), value in TINY.items():
            if node["type"] == class_type:
                assert values[bw.widget_index(class_type, widget)] == value, (node["type"], node["widgets"])
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
    video.first.wait_for(state="visible", timeout=VIDEO_TIMEOUT_MS)
    page.wait_for_function("(v) => v.readyState >= 1", arg=video.first.element_handle(), timeout=VIDEO_TIMEOUT_MS)
    size = video.first.evaluate("v => [v.videoWidth, v.videoHeight]")
    assert size == [64, 64], f"the output video in the page is {size}, expected 64x64"
    assert page_errors == [], f"uncaught exceptions in the page: {page_errors}"
    server.post("/free", {"unload_models": True, "free_memory": True})  # keep the next workflow's peak low
    print(f"[browser] {name}: ran in {run_s:.1f} s (whole test {time.monotonic() - started:.1f} s)")
