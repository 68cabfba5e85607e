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
   the ``<video>`` of the SaveVideo (or MagicAnimate Save Video) output appears in the page at 64x64 (not for
   ``magicanimate_from_video``: its MagicAnimate part runs in ``tests/e2e/test_server.py`` with a DensePose video
   in place of the estimator).

Screenshots and thumbnails go to the test's temporary dir; with ``MAGICANIMATE_UPDATE_SCREENSHOTS=1`` they also
replace ``docs/screenshots/<workflow>.png`` (the pictures in the README) and ``example_workflows/<workflow>.jpg``
(the shipped ones come from the newest frontend the pack is tested with, ComfyUI 0.33's 1.49.6)::

    MAGICANIMATE_UPDATE_SCREENSHOTS=1 COMFYUI_PATH=/path/to/ComfyUI .venv/bin/python -m pytest -q tests/browser

The browser is Debian's Chromium (``apt-get install -y chromium``; ``bash .ci/run`` installs it); Playwright never
downloads one. Without Chromium the browser tests fail when ``$CI`` is set and are skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from browser.frontend_checks import (
    CHROMIUM_FLAGS,
    DEVICE_SCALE,
    EXTERNAL,
    OVERLAYS,
    PAGE_TIMEOUT_MS,
    README,
    RUN_TIMEOUT_S,
    SCREENSHOT_DIR,
    THUMBNAIL_SIZE,
    TINY,
    UI_WORKFLOWS,
    UPDATE_ENV,
    VIDEO_TIMEOUT_MS,
    VIEWPORT,
    check_loaded,
    check_pack_nodes,
    check_prompt_matches_api_file,
    check_readable,
    open_template,
    size_of,
    ui_workflow,
)
from browser.page_scripts import PREVIEWS_READY_JS, RECORD_TEXT_JS, RECTS_JS, SET_OVERLAYS_VISIBILITY_JS, SET_WIDGETS_JS
from server_harness import NODE_IDS, REPO_ROOT, Server, comfyui_server, shared_model_tree, unavailable

import devtools.workflows as bw

# ---------------------------------------------------------------------------------------------------------------------
# README screenshots and template thumbnails (fast: no browser)
# ---------------------------------------------------------------------------------------------------------------------


def test_readme_shows_a_screenshot_of_each_workflow_and_each_template_has_a_thumbnail():
    readme = README.read_text(encoding="utf-8")
    assert UI_WORKFLOWS, "no UI-format workflow in example_workflows/"
    for name in UI_WORKFLOWS:
        rel = f"docs/screenshots/{name}.png"
        assert (REPO_ROOT / rel).is_file(), f"{rel} is missing; run {UPDATE_ENV}=1 pytest tests/browser"
        assert size_of(REPO_ROOT / rel) == (VIEWPORT["width"], VIEWPORT["height"]), rel  # the whole window
        assert f"]({rel})" in readme, f"README.md does not show {rel}"
        thumb = bw.ui_path(name).with_suffix(".jpg")  # the name the frontend asks for (mediaSubtype "jpg")
        assert thumb.is_file(), f"{thumb} is missing; run {UPDATE_ENV}=1 pytest tests/browser"
        assert size_of(thumb) == THUMBNAIL_SIZE, thumb
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
    context.add_init_script(RECORD_TEXT_JS)
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.goto(server.base)
    page.wait_for_function("() => !!(window.app && window.app.graph && window.app.canvas && "
                           "window.app.extensionManager && window.LiteGraph)")
    yield page
    context.close()


def pictures(page, name: str, tmp_dir: Path, workflow: dict) -> Path:
    """The window as the user sees it (README) and the template thumbnail (the graph, a 512x384 JPEG)."""
    from PIL import Image

    shipped = [n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "LoadVideo"
               and n["widgets_values"][0] == bw.DEMO_VIDEO]  # the user's own video of the third one is not there
    page.wait_for_function(PREVIEWS_READY_JS, arg=shipped)
    page.wait_for_timeout(500)
    shot = tmp_dir / f"{name}.png"
    page.screenshot(path=str(shot))
    rects = page.evaluate(RECTS_JS, {})
    left = max(0, min(n["left"] for n in rects["nodes"]) - 16)
    top = max(0, min(n["top"] for n in rects["nodes"]) - 16)
    right = min(VIEWPORT["width"], max(n["right"] for n in rects["nodes"]) + 16)
    bottom = min(VIEWPORT["height"], max(n["bottom"] for n in rects["nodes"]) + 16)
    # the thumbnail shows the graph only: the page's bars, minimap and zoom controls hidden (the margin around the
    # graph can reach under them in a fitted view)
    bare = tmp_dir / f"{name}.graph.png"
    page.evaluate(SET_OVERLAYS_VISIBILITY_JS, [OVERLAYS, "hidden"])
    try:
        page.wait_for_timeout(200)
        page.screenshot(path=str(bare))
    finally:
        page.evaluate(SET_OVERLAYS_VISIBILITY_JS, [OVERLAYS, ""])
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


def queue_with_run_button(page) -> dict:
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
    workflow = ui_workflow(name)
    external = any(n["type"] in EXTERNAL for n in workflow["nodes"])

    # 1-2. through the Templates dialog: nothing missing (but other packs' nodes), the nodes as declared
    opened = open_template(page, name)
    nodes = check_loaded(page, workflow)
    check_pack_nodes(nodes, object_info, workflow)
    if not external:  # a missing node has no inputs to convert
        check_prompt_matches_api_file(page, name, object_info)

    # 3-4. readable at the saved zoom, nothing hidden; the pictures
    view = check_readable(page, workflow, opened)
    pictures(page, name, tmp_path, workflow)
    print(f"[browser] {name}: zoom {view['scale']:.2f} >= text threshold {view['threshold']:.3f}, "
          f"{len(view['drawn'])} strings drawn")
    if external:
        return

    # 5. tiny run through the Run button
    page.evaluate(SET_WIDGETS_JS, [[c, w, v] for (c, w), v in TINY.items()])
    queued = queue_with_run_button(page)
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
    save_ids = [nid for nid, node in sent.items() if node["class_type"] in ("SaveVideo", "MagicAnimateSaveVideo")]
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
