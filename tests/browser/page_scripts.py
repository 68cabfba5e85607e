"""The JavaScript the browser test runs in the frontend's page: spies installed before the app starts and readers
of what it drew (graph, titles, links, view, overlays)."""

from __future__ import annotations

#: While ``window.__recordText`` is set, records every string the page draws on a canvas (2D ``fillText``) and every
#: cubic Bezier it builds (``moveTo`` + ``bezierCurveTo`` on a 2D context or a ``Path2D``: the links), in the
#: coordinates the caller passes (the graph's, for the canvas).
RECORD_TEXT_JS = """(() => {
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


# ---------------------------------------------------------------------------------------------------------------------
# In-page helpers
# ---------------------------------------------------------------------------------------------------------------------

SPY_MISSING_JS = """() => {
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

GRAPH_JS = """() => window.app.graph.nodes.map(n => ({
    id: n.id, type: n.type, title: n.title, has_errors: !!n.has_errors,
    registered: n.type in window.LiteGraph.registered_node_types,
    size: [n.size[0], n.size[1]],
    sockets: (n.inputs || []).filter(i => !i.widget).map(i => ({name: i.name, type: i.type})),
    outputs: (n.outputs || []).map(o => o.type),
    widgets: (n.widgets || []).map(w => ({name: w.name, type: w.type,
                                          value: (typeof w.value === 'object' ? null : w.value)})),
}))"""

#: Titles drawn on the canvas in one full redraw at the current view, and the view itself.
DRAWN_TITLES_JS = """async () => {
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
RECTS_JS = """(overlays) => {
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
FITTED_VIEW_JS = """() => {
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
OPENED_VIEW_JS = """async () => {
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    const ds = window.app.canvas.ds;
    return {scale: ds.scale, offset: Array.from(ds.offset), fit: (FITTED)()};
}""".replace("FITTED", FITTED_VIEW_JS)

#: Every node's rectangle (title bar included) and every link's end points, in graph coordinates.
LAYOUT_JS = """() => {
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
PREVIEWS_READY_JS = """(files) => {
    const nodes = window.app.graph.nodes;
    const images = nodes.filter(n => n.type === 'LoadImage')
        .every(n => n.imgs && n.imgs.length && n.imgs.every(i => i.complete && i.naturalWidth > 0));
    const videos = Array.from(document.querySelectorAll('video'))
        .filter(v => files.some(f => decodeURIComponent(v.src || '').includes('filename=' + f)));
    return images && videos.length >= files.length && videos.every(v => v.readyState >= 2);
}"""


SET_OVERLAYS_VISIBILITY_JS = """([overlays, visibility]) => {
    for (const selector of Object.values(overlays))
        for (const el of document.querySelectorAll(selector)) el.style.visibility = visibility;
}"""


SET_WIDGETS_JS = """(tiny) => {
    for (const n of window.app.graph.nodes)
        for (const [type, widget, value] of tiny)
            if (n.type === type) {
                const w = n.widgets.find(w => w.name === widget);
                w.value = value;
                w.callback?.(value);
            }
    window.app.canvas.setDirty(true, true);
}"""

#: The Markdown notes' rendered text (a DOM element over the canvas) and where it lies in the window.
NOTES_JS = """() => Array.from(document.querySelectorAll('.comfy-markdown')).map(e => {
    const r = e.getBoundingClientRect(), s = getComputedStyle(e);
    return {text: e.innerText, left: r.left, top: r.top, right: r.right, bottom: r.bottom,
            visible: s.display !== 'none' && s.visibility !== 'hidden' && r.width > 0 && r.height > 0};
})"""
