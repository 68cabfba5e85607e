"""The installed frontend's own node search finds the pack's nodes by the words users type: "densepose", "pose video",
"dance", "Animate Anyone", and by their search aliases where the frontend searches them.

Both places users search the node library (the search box and the node library sidebar) call
``NodeSearchService.searchNode``: Fuse.js with ``threshold: 0.3`` and Fuse's default ``location: 0, distance: 100``
over the keys ``NodeSearchService`` gives it, then the frontend's ``FuseSearch`` ranking (match tiers computed from
the node id and display name, frequent nodes first within a tier). What the keys are is read from the installed
bundle, never from its version number:

* ``["name", "display_name"]`` (frontend 1.32, ComfyUI 0.3.75): not category, description or ``search_aliases``.
  A word is found only where it starts within about the first 30 characters of the node id or display name, and
  the words of a multi-word query (extended search) must all be in the same string. So the display names carry the
  words (``test_search_words_start_early...``);
* ``["name", "display_name", "search_aliases"]`` (newer frontends): the aliases a ComfyUI whose ``io.Schema`` has
  ``search_aliases`` serves (``nodes/api.py`` ``SEARCH_ALIASES``) are searched too. There each query must rank its
  node first, and every pack node that has the query as an alias must be listed.

The check runs the frontend's code with Node.js: Fuse.js from the installed bundle's vendor chunk, the
``FuseSearch`` class (ranking) and the options cut from ``NodeSearchService`` in the installed bundle, over every node
ComfyUI serves (core, core extras and this pack, with their aliases), and keeps the first 64 results as the sidebar
does. Core nodes are given the highest use frequency (the frontend ranks frequent nodes first within a match tier),
the worst case for the pack's nodes. Without ``node`` on the PATH the check fails in CI (``$CI`` set) and is skipped
elsewhere; ``test_search_words_start_early...`` still applies the key list and location rule in Python.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from server_harness import NODE_IDS, unavailable

from devtools.pack import pack_nodes

#: query -> node ids it must find (within the first 64 results); where aliases are searched, the first one must be
#: the first result.
EXPECTED = {
    "densepose": ["MagicAnimatePoseControl"],
    "DensePose": ["MagicAnimatePoseControl"],
    "pose video": ["MagicAnimatePoseControl"],
    "dance": ["MagicAnimateTemporalSample"],
    "Animate Anyone": ["MagicAnimateLoader"],
    "MagicAnimate": list(NODE_IDS),
}
LIMIT = 64  # the node library sidebar's searchNode(..., {limit: 64})
ALIASES = "search_aliases"


def _static() -> Path:
    import comfyui_frontend_package

    return Path(comfyui_frontend_package.__file__).parent / "static"


_SEARCH_SERVICE = re.compile(r"class NodeSearchService\{|NodeSearchService=class\{")


def _main_bundle() -> str:
    """The text of the frontend chunk that defines ``NodeSearchService``."""
    for path in sorted((_static() / "assets").glob("*.js")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if _SEARCH_SERVICE.search(text):
            return text
    raise AssertionError("no NodeSearchService in the installed frontend: its search changed, revisit this test")


def _fuse_options(bundle: str) -> str:
    """The JS object literal NodeSearchService passes to FuseSearch, e.g. ``{fuseOptions:{keys:[...],...},...}``."""
    m = re.search(r"this\.nodeFuseSearch=new FuseSearch\([\w$]+,(\{fuseOptions:\{[^{}]*\}[^{}]*\})\)", bundle)
    assert m, "NodeSearchService no longer builds its FuseSearch as this test expects"
    return m.group(1)


def _keys(options: str) -> list[str]:
    m = re.search(r"keys:\[([^\]]*)\]", options)
    assert m, options
    return [k.strip("\"'` ") for k in m.group(1).split(",")]


def test_frontend_search_options():
    """The premise of the display names and aliases: this frontend's node search keys and threshold (the node id and
    display name, perhaps the aliases; no category or description), and Fuse's location rule (no ``location``,
    ``distance`` or ``ignoreLocation``)."""
    options = _fuse_options(_main_bundle())
    keys = _keys(options)
    assert keys[:2] == ["name", "display_name"] and set(keys) <= {"name", "display_name", ALIASES}, options
    assert "threshold:.3" in options, options
    assert "ignoreLocation" not in options and "distance" not in options and "location" not in options, options


def _display_names() -> dict[str, str]:
    return {node_id: cls.define_schema().display_name for node_id, cls in pack_nodes().items()}


def test_search_words_start_early_in_the_display_names():
    """Python form of Fuse's rule for an exact word (score = distance from the start / 100 <= 0.3): every word of each
    query starts within the first 30 characters of the node id or of the display name, all in the same string (what
    a frontend that does not search aliases needs)."""
    names = _display_names()
    for query, node_ids in EXPECTED.items():
        for node_id in node_ids:
            texts = [node_id.lower(), names[node_id].lower()]
            assert any(all(0 <= t.find(w) <= 30 for w in query.lower().split()) for t in texts), (query, node_id, texts)


@pytest.fixture(scope="module")
def served_nodes() -> list[dict]:
    """``{name, display_name, search_aliases}`` of every node /object_info would list: core, core extras and this
    pack (``search_aliases`` as ComfyUI's server serves them: V3 node info, or a V1 class's ``SEARCH_ALIASES``)."""
    import nodes

    if "SaveVideo" not in nodes.NODE_CLASS_MAPPINGS:  # core extras not loaded yet by another test in this process
        asyncio.run(nodes.init_builtin_extra_nodes())
    pack = pack_nodes()

    def entry(name: str, cls, core: bool) -> dict:
        if hasattr(cls, "GET_NODE_INFO_V1"):
            info = cls.GET_NODE_INFO_V1()
            display, aliases = info["display_name"], info.get(ALIASES)
        else:
            display, aliases = nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name, name), getattr(cls, "SEARCH_ALIASES", None)
        return {"name": name, "display_name": display or name, ALIASES: list(aliases or []), "core": core}

    out = [entry(name, cls, True) for name, cls in nodes.NODE_CLASS_MAPPINGS.items() if name not in pack]
    return out + [entry(name, cls, False) for name, cls in pack.items()]


RUNNER = r"""
import { readFileSync } from "node:fs";
const [vendor, classFile, inputFile] = process.argv.slice(2);
// Browser globals the vendor chunks touch while they load (none is used by Fuse).
const stub = new Proxy(function () {}, {
  get: (t, k) => (k === "then" ? undefined : k === Symbol.toPrimitive ? () => "" : stub),
  apply: () => stub, construct: () => stub});
Object.assign(globalThis, {window: globalThis, self: globalThis, document: stub, localStorage: stub,
                           location: new URL("http://127.0.0.1:8188/")});
globalThis.navigator ??= {userAgent: "node"};
globalThis.Worker = class { postMessage() {} addEventListener() {} terminate() {} };
const input = JSON.parse(readFileSync(inputFile, "utf8"));
const Fuse = (await import(vendor))[input.fuseExport];
const params = [input.fuseName, ...(input.fuseName === "u" ? [] : ["u"])];
const FuseSearch = new Function(...params, readFileSync(classFile, "utf8") + "\nreturn FuseSearch;")(Fuse, t => t);
const options = new Function("return " + input.options)();
// Frequent nodes rank first within a match tier (ComfyNodeDefImpl.postProcessSearchScores): core nodes most frequent.
const items = input.nodes.map(n => ({name: n.name, display_name: n.display_name,
  ...(input.aliases ? {search_aliases: n.search_aliases} : {}),
  postProcessSearchScores: s => [s[0], n.core ? -1e9 : 0, ...s.slice(1)]}));
const search = new FuseSearch(items, options);
const out = {};
for (const q of input.queries) out[q] = search.search(q).slice(0, input.limit).map(n => n.name);
console.log(JSON.stringify(out));
"""


def _fuse_search_source(bundle: str) -> tuple[str, str]:
    """JS that defines ``FuseSearch`` (the class cut from the bundle, with the helper it calls), and the name the
    class uses for Fuse."""
    m = re.search(r"(?:class FuseSearch|FuseSearch=class)(\{.*?\})[,;\s]*(?:class NodeSearchService\{|"
                  r"NodeSearchService=class\{)", bundle, re.S)
    assert m, "FuseSearch is no longer defined right before NodeSearchService"
    body = m.group(1)
    fuse = re.search(r"this\.fuse=new ([\w$]+)\(", body)
    assert fuse, "FuseSearch no longer builds a Fuse instance as this test expects"
    helper = re.search(r"function isFuseSearchable\([\w$]+\)\{[^}]*\}", bundle)
    assert helper or "isFuseSearchable" not in body, "isFuseSearchable changed"
    source = (helper.group(0) + "\n" if helper else "") + "const FuseSearch = class " + body + ";"
    return source, fuse.group(1)


def _copy_module(path: Path, tmp: Path, imports: dict[str, str], done: dict[Path, str]) -> str:
    """Copy a frontend ES module (and, recursively, what it imports: relative chunks and index.html's import map) to
    ``tmp`` as ``.mjs`` files that Node.js loads; return the copy's file name."""
    path = path.resolve()
    if path in done:
        return done[path]
    name = f"m{len(done)}_{path.stem}.mjs"
    done[path] = name
    text = path.read_text(encoding="utf-8")

    def resolve(match: re.Match) -> str:
        spec = match.group(2)
        if spec.startswith(("./", "../")):
            target = path.parent / spec
        elif spec in imports:
            target = _static() / imports[spec]
        else:
            return match.group(0)
        if not target.is_file():
            return match.group(0)
        return f'{match.group(1)}"./{_copy_module(target, tmp, imports, done)}"'

    text = re.sub(r'(\bfrom\s*|\bimport\s*)"([^"\s]+)"', resolve, text)
    (tmp / name).write_text(text, encoding="utf-8")
    return name


def _vendor_module(bundle: str, fuse_name: str, tmp: Path) -> tuple[Path, str]:
    """The vendor chunk that exports Fuse (imported as ``fuse_name`` by the search chunk), copied for Node.js, and the
    name it exports Fuse under."""
    for m in re.finditer(r'import\{([^}]*)\}from"\./([^"]+)"', bundle):
        for item in m.group(1).split(","):
            exported, _, local = (part.strip() for part in item.partition(" as "))
            if (local or exported) == fuse_name:
                html = (_static() / "index.html").read_text(encoding="utf-8")
                imap = re.search(r'<script type="importmap">(.*?)</script>', html, re.S)
                imports = json.loads(imap.group(1))["imports"] if imap else {}
                name = _copy_module(_static() / "assets" / m.group(2), tmp, imports, {})
                return tmp / name, exported
    raise AssertionError(f"the frontend bundle no longer imports Fuse ({fuse_name}) from a vendor chunk")


def test_the_frontends_own_search_finds_the_pack_nodes(served_nodes, tmp_path):
    if shutil.which("node") is None:  # .ci/run installs Node.js
        unavailable("Node.js is not installed: the frontend's JS cannot run (apt-get install -y nodejs)")
    bundle = _main_bundle()
    options = _fuse_options(bundle)
    aliases = ALIASES in _keys(options)
    source, fuse_name = _fuse_search_source(bundle)
    (tmp_path / "fuse_search.js").write_text(source, encoding="utf-8")
    vendor, export = _vendor_module(bundle, fuse_name, tmp_path)
    (tmp_path / "input.json").write_text(json.dumps({
        "fuseExport": export, "fuseName": fuse_name, "options": options, "nodes": served_nodes, "aliases": aliases,
        "queries": list(EXPECTED), "limit": LIMIT}), encoding="utf-8")
    (tmp_path / "runner.mjs").write_text(RUNNER, encoding="utf-8")
    done = subprocess.run(["node", str(tmp_path / "runner.mjs"), str(vendor), str(tmp_path / "fuse_search.js"),
                           str(tmp_path / "input.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(served_nodes) > 300  # core, core extras and the pack: the ranking is checked among them all
    print(f"\n[search] keys {_keys(options)}: " + "; ".join(f"{q!r} -> {r[:3]}" for q, r in found.items()))
    for query, node_ids in EXPECTED.items():
        missing = [n for n in node_ids if n not in found[query]]
        assert not missing, f"searching {query!r} does not list {missing} in its first {LIMIT}: {found[query][:10]}"
    if not aliases:
        return
    # A frontend that searches aliases: each query ranks its node first and lists every node it is an alias of.
    pack = {n["name"]: n for n in served_nodes if not n["core"]}
    assert all(pack[n][ALIASES] for n in NODE_IDS), f"the ComfyUI serves no search_aliases for some nodes: {pack}"
    for query, node_ids in EXPECTED.items():
        if len(node_ids) == 1:
            assert found[query][0] == node_ids[0], f"searching {query!r} ranks {found[query][:5]} first"
        by_alias = [n for n, node in pack.items() if query.lower() in (a.lower() for a in node[ALIASES])]
        missing = [n for n in by_alias if n not in found[query]]
        assert not missing, f"searching {query!r} does not list {missing}, which have it as an alias: {found[query]}"
