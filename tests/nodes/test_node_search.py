"""The node search of the frontend ComfyUI 0.3.75 ships (comfyui-frontend-package 1.32.x) finds the pack's nodes by
the words users type: "densepose", "pose video", "dance", "Animate Anyone" (issue 11).

That frontend searches the node library (the search box and the node library sidebar both call
``NodeSearchService.searchNode``) with Fuse.js over two keys only, the node id (``name``) and ``display_name``
(not category, description, python_module or ``search_aliases``), with ``threshold: 0.3`` and Fuse's default
``location: 0, distance: 100``: a word is found only where it starts within about the first 30 characters of one of
those strings, and the words of a multi-word query (extended search) must all be in the same string. So the display
names carry the words (``nodes/api.py`` ``SEARCH_ALIASES`` keeps them for newer ComfyUI's ``search_aliases``).

The check runs the frontend's own code with Node.js: Fuse.js from the installed bundle's vendor chunk, the
``FuseSearch`` class (ranking) and the Fuse options cut from ``NodeSearchService`` in the installed bundle, over
every node ComfyUI serves (core, core extras and this pack), and keeps the first 64 results as the sidebar does. Core
nodes are given the highest use frequency (the frontend ranks frequent nodes first within a match tier), the worst
case for the pack's nodes. Without ``node`` on the PATH the check fails in CI (``$CI`` set) and is skipped
elsewhere; ``test_search_words_start_early...`` still applies the same key list and location rule in Python.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pack_loader import pack_nodes
from server_harness import unavailable

#: query -> node ids it must find (within the first 64 results).
EXPECTED = {
    "densepose": ["MagicAnimatePoseControl"],
    "DensePose": ["MagicAnimatePoseControl"],
    "pose video": ["MagicAnimatePoseControl"],
    "dance": ["MagicAnimateTemporalSample"],
    "Animate Anyone": ["MagicAnimateLoader"],
    "MagicAnimate": ["MagicAnimateLoader", "MagicAnimateAppearanceEncode", "MagicAnimatePoseControl",
                     "MagicAnimateSegmentFuse", "MagicAnimateTemporalSample", "MagicAnimatePoseAlign"],
}
LIMIT = 64  # the node library sidebar's searchNode(..., {limit: 64})


def _static() -> Path:
    import comfyui_frontend_package

    return Path(comfyui_frontend_package.__file__).parent / "static"


def _main_bundle() -> str:
    """The text of the frontend chunk that defines ``NodeSearchService``."""
    for path in sorted((_static() / "assets").glob("index-*.js")):
        text = path.read_text(encoding="utf-8")
        if "class NodeSearchService{" in text:
            return text
    raise AssertionError("no NodeSearchService in the installed frontend: its search changed, revisit this test")


def _fuse_options(bundle: str) -> str:
    """The JS object literal NodeSearchService passes to FuseSearch, e.g. ``{fuseOptions:{keys:[...],...},...}``."""
    m = re.search(r"this\.nodeFuseSearch=new FuseSearch\(\w+,(\{fuseOptions:\{[^{}]*\}[^{}]*\})\)", bundle)
    assert m, "NodeSearchService no longer builds its FuseSearch as this test expects"
    return m.group(1)


def test_frontend_searches_only_node_id_and_display_name():
    """The premise of the display names: this frontend's node search keys and threshold (no aliases, no category)."""
    options = _fuse_options(_main_bundle())
    assert 'keys:["name","display_name"]' in options and "threshold:.3" in options, options
    assert "ignoreLocation" not in options and "distance" not in options and "location" not in options, options


def _display_names() -> dict[str, str]:
    return {node_id: cls.define_schema().display_name for node_id, cls in pack_nodes().items()}


def test_search_words_start_early_in_the_display_names():
    """Python form of Fuse's rule for an exact word (score = distance from the start / 100 <= 0.3): every word of each
    query starts within the first 30 characters of the node id or of the display name, all in the same string."""
    names = _display_names()
    for query, node_ids in EXPECTED.items():
        for node_id in node_ids:
            texts = [node_id.lower(), names[node_id].lower()]
            assert any(all(0 <= t.find(w) <= 30 for w in query.lower().split()) for t in texts), (query, node_id, texts)


@pytest.fixture(scope="module")
def served_nodes() -> list[dict]:
    """``{name, display_name}`` of every node /object_info would list: core, core extras and this pack."""
    import nodes

    if "SaveVideo" not in nodes.NODE_CLASS_MAPPINGS:  # core extras not loaded yet by another test in this process
        asyncio.run(nodes.init_builtin_extra_nodes())
    out = []
    for name, cls in nodes.NODE_CLASS_MAPPINGS.items():
        if hasattr(cls, "GET_NODE_INFO_V1"):
            display = cls.GET_NODE_INFO_V1()["display_name"]
        else:
            display = nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name, name)
        out.append({"name": name, "display_name": display or name, "core": True})
    pack = _display_names()
    out = [n for n in out if n["name"] not in pack]
    out += [{"name": k, "display_name": v, "core": False} for k, v in pack.items()]
    return out


RUNNER = r"""
import { readFileSync } from "node:fs";
const [vendor, classFile, inputFile] = process.argv.slice(2);
// Browser globals the vendor chunk touches while it loads (none is used by Fuse).
const stub = new Proxy(function () {}, {
  get: (t, k) => (k === "then" ? undefined : k === Symbol.toPrimitive ? () => "" : stub),
  apply: () => stub, construct: () => stub});
Object.assign(globalThis, {window: globalThis, self: globalThis, document: stub, localStorage: stub,
                           location: new URL("http://127.0.0.1:8188/")});
globalThis.navigator ??= {userAgent: "node"};
globalThis.Worker = class { postMessage() {} addEventListener() {} terminate() {} };
const input = JSON.parse(readFileSync(inputFile, "utf8"));
const Fuse = (await import(vendor))[input.fuseExport];
const u = (target) => target;
const FuseSearch = new Function("Fuse", "u", readFileSync(classFile, "utf8") + "\nreturn FuseSearch;")(Fuse, u);
const options = new Function("return " + input.options)();
// Frequent nodes rank first within a match tier (ComfyNodeDefImpl.postProcessSearchScores): core nodes most frequent.
const items = input.nodes.map(n => ({name: n.name, display_name: n.display_name,
  postProcessSearchScores: s => [s[0], n.core ? -1e9 : 0, ...s.slice(1)]}));
const search = new FuseSearch(items, options);
const out = {};
for (const q of input.queries) out[q] = search.search(q).slice(0, input.limit).map(n => n.name);
console.log(JSON.stringify(out));
"""


def _vendor_module(bundle: str, tmp: Path) -> tuple[Path, str]:
    """The vendor chunk that exports Fuse, copied as an ES module whose bare imports use index.html's import map."""
    m = re.search(r"import\{[^}]*?\b(\w+) as Fuse\b[^}]*\}from\"\./([^\"]+)\"", bundle)
    assert m, "the frontend bundle no longer imports Fuse from a vendor chunk"
    export, chunk = m.group(1), m.group(2)
    html = (_static() / "index.html").read_text(encoding="utf-8")
    imports = json.loads(re.search(r'<script type="importmap">(.*?)</script>', html, re.S).group(1))["imports"]
    text = (_static() / "assets" / chunk).read_text(encoding="utf-8")

    def resolve(match: re.Match) -> str:
        target = imports.get(match.group(1))
        if target is None:
            return match.group(0)
        copy = tmp / Path(target).name.replace(".js", ".mjs")
        shutil.copyfile(_static() / target, copy)
        return f'from"./{copy.name}"'

    text = re.sub(r'from"([^"./][^"]*)"', resolve, text)
    path = tmp / "vendor.mjs"
    path.write_text(text, encoding="utf-8")
    return path, export


def test_the_frontends_own_search_finds_the_pack_nodes(served_nodes, tmp_path):
    if shutil.which("node") is None:  # .ci/run installs Node.js
        unavailable("Node.js is not installed: the frontend's JS cannot run (apt-get install -y nodejs)")
    bundle = _main_bundle()
    m = re.search(r"(class FuseSearch\{.*?)class NodeSearchService\{", bundle, re.S)
    assert m, "FuseSearch is no longer defined right before NodeSearchService"
    helper = re.search(r"function isFuseSearchable\(\w+\)\{[^}]*\}", bundle)
    assert helper, "isFuseSearchable changed"
    (tmp_path / "fuse_search.js").write_text(helper.group(0) + "\n" + m.group(1), encoding="utf-8")
    vendor, export = _vendor_module(bundle, tmp_path)
    (tmp_path / "input.json").write_text(json.dumps({
        "fuseExport": export, "options": _fuse_options(bundle), "nodes": served_nodes, "queries": list(EXPECTED),
        "limit": LIMIT}), encoding="utf-8")
    (tmp_path / "runner.mjs").write_text(RUNNER, encoding="utf-8")
    done = subprocess.run(["node", str(tmp_path / "runner.mjs"), str(vendor), str(tmp_path / "fuse_search.js"),
                           str(tmp_path / "input.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(served_nodes) > 300  # core, core extras and the pack: the ranking is checked among them all
    for query, node_ids in EXPECTED.items():
        missing = [n for n in node_ids if n not in found[query]]
        assert not missing, f"searching {query!r} does not list {missing} in its first {LIMIT}: {found[query][:10]}"
