"""UI layout rules of the shipped workflows and the views the frontends open them with."""

from __future__ import annotations

import math

from .graph import Graph, Node
from .nodes import NODE_SPECS, widget_index

# ------------------------------------------------------------------------------------------------------------------
# UI layout
#
# Every node is placed by hand (``at=``; the positions were found with a small search over the rules below). What
# :func:`check_layout` enforces, at build time:
#
# * nodes do not overlap (title bars included, :data:`NODE_GAP` apart);
# * every node lies in exactly one group (the rectangle :func:`group_bounding` draws around its members) and touches
#   no other; groups do not overlap;
# * no link runs behind a node: each link is drawn as the frontend draws it (a cubic Bezier from the output slot to the
#   input slot, control points ``max(30, distance / 4)`` straight out of the output and into the input), and it keeps
#   :data:`LINK_CLEARANCE` from every node's top and bottom (it may enter a node's side only as far as the slot dots);
# * the view the frontend opens a template with is readable at 1920x1080 (device pixel ratio 1, default settings):
#   the saved view for frontend 1.32 (:func:`saved_view`), the fitted view for newer ones (:func:`fitted_view`), at or
#   above :data:`MIN_SAVED_SCALE` / :data:`MIN_FITTED_SCALE`.
#
# The browser test (tests/browser/test_frontend.py) checks the same against the real frontends.

TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT: the title bar is drawn above a node's ``pos``
SLOT_HEIGHT = 20  # LiteGraph.NODE_SLOT_HEIGHT: sockets (left) and outputs (right) one per row from the top
WIDGET_ROW = 24  # a widget's row height; a widget driven by a link has its input dot on its row
SLOT_INSET = 12  # slot dots sit 9-10 units inside a node's left / right edge
NODE_GAP = 20  # between any two nodes
GROUP_PAD = 20  # a group's edge around its members (title bars included) at the sides and bottom
GROUP_TITLE = 40  # a group's title bar (frontends draw it 30-34 units tall) above its members' padding
LINK_CLEARANCE = 8  # between a link and the top / bottom of a node it passes

#: The part of a 1920x1080 window (device pixel ratio 1, frontend 1.32.9 with default settings) where the canvas is
#: not covered: right of the 48 px sidebar, below the workflow tabs and the breadcrumb / Run bar (and the "Nodes 2.0"
#: banner), left of the window edge, above the zoom controls. The browser test checks it against the real page.
VIEW_LEFT, VIEW_TOP, VIEW_RIGHT, VIEW_BOTTOM = 80, 140, 1900, 1050
#: The minimap's corner (bottom right, shown by default): nothing may be drawn under it.
MINIMAP_LEFT, MINIMAP_TOP = 1650, 820
#: The saved zoom must be at least this: the frontend (1.32.9) draws nodes as blank boxes (no text) below
#: ``MinFontSizeForLOD / (NODE_TEXT_SIZE * sqrt(devicePixelRatio))`` = 8 / 14 = 0.571 at the defaults; the margin
#: keeps titles readable (8.7 px at least).
MIN_SAVED_SCALE = 0.62
#: Newer frontends (1.49) open a template from the Templates dialog fitted, whatever its saved view:
#: ``DragAndScale.fitToBounds`` of the bounds of all nodes plus 10 units, zoom ``FIT_ZOOM`` of the 1920x1080 canvas
#: (the whole window: the bars are drawn over it), centred. Same text threshold (0.571); this margin keeps titles at
#: 8.4 px at least.
FIT_ZOOM = 0.75
MIN_FITTED_SCALE = 0.6
#: The minimap of those frontends (bottom right of the window, shown by default), in window pixels.
FIT_MINIMAP_LEFT, FIT_MINIMAP_TOP = 1660, 820


def _node_size(node: Node) -> list[int]:
    return list(node.size or node.spec.size or (node.spec.width, 46 + 22 * len(node.spec.outputs)))


def _layout(g: Graph) -> dict[int, list[int]]:
    unplaced = [f"{n.id} {n.class_type}" for n in g.nodes if n.at is None]
    if unplaced:
        raise ValueError(f"workflow {g.name}: nodes without a position (at=...): {unplaced}")
    return {n.id: list(n.at) for n in g.nodes}


def _slot_pos(ui_node: dict, slot: int, output: bool) -> tuple[float, float]:
    """Where the frontend draws a UI node's input or output dot (canvas units)."""
    x, y = ui_node["pos"]
    if output:
        return x + ui_node["size"][0] - 9, y + 14 + SLOT_HEIGHT * slot
    inp = ui_node["inputs"][slot]
    if "widget" not in inp:
        return x + 10, y + 14 + SLOT_HEIGHT * slot
    spec = NODE_SPECS[ui_node["type"]]
    rows = max(sum(1 for i in spec.inputs if not i.widget), len(spec.outputs))
    row = widget_index(ui_node["type"], inp["name"])  # control / upload entries are widgets with rows too
    return x + 10, y + SLOT_HEIGHT * rows + 16 + WIDGET_ROW * row


def cubic_points(curve: tuple[float, ...] | list[float], steps: int) -> list[tuple[float, float]]:
    """``steps - 1`` points of the cubic Bezier ``(x0, y0, x1, y1, x2, y2, x3, y3)`` at t = k / steps, ends excluded."""
    x0, y0, x1, y1, x2, y2, x3, y3 = curve
    points = []
    for k in range(1, steps):
        t = k / steps
        u = 1 - t
        points.append((u ** 3 * x0 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t ** 3 * x3,
                       u ** 3 * y0 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t ** 3 * y3))
    return points


def curve_points(curve: tuple[float, ...] | list[float], spacing: float = 1.0) -> list[tuple[float, float]]:
    """Points of the cubic Bezier ``curve`` no more than ``spacing`` canvas units apart (ends excluded): the curve is
    no longer than its control polygon, so that many steps leave no gap a node's corner could slip through. The
    offline layout check and the browser test both test links with it."""
    x0, y0, x1, y1, x2, y2, x3, y3 = curve
    polygon = sum(((bx - ax) ** 2 + (by - ay) ** 2) ** 0.5
                  for (ax, ay), (bx, by) in (((x0, y0), (x1, y1)), ((x1, y1), (x2, y2)), ((x2, y2), (x3, y3))))
    return cubic_points(curve, max(2, math.ceil(polygon / spacing)))


def link_curve(start: tuple[float, float], end: tuple[float, float]) -> list[tuple[float, float]]:
    """Points of a link as the frontend's spline draws it (LiteGraph ``calculateControlPoints``), ends excluded,
    one canvas unit apart."""
    (x0, y0), (x3, y3) = start, end
    c = max(30.0, ((x3 - x0) ** 2 + (y3 - y0) ** 2) ** 0.5 * 0.25)
    return curve_points((x0, y0, x0 + c, y0, x3 - c, y3, x3, y3))


def fitted_view(nodes: list[dict]) -> dict:
    """The view newer frontends open a template with (``DragAndScale.fitToBounds``, see :data:`FIT_ZOOM`)."""
    x0, y0, x1, y1 = bounds(nodes)
    w, h = x1 - x0 + 20, y1 - y0 + 20
    scale = FIT_ZOOM * min(1920 / max(w, 300), 1080 / max(h, 300))
    return {"scale": scale, "offset": [-(x0 - 10) - w / 2 + 960 / scale, -(y0 - 10) - h / 2 + 540 / scale]}


def group_bounding(members: list[dict]) -> list[int]:
    """A group's ``bounding`` ``[x, y, width, height]`` around UI nodes: their bounds (title bars included),
    :data:`GROUP_PAD` around them and :data:`GROUP_TITLE` above for the group's title."""
    x0, y0, x1, y1 = bounds(members)
    return [round(x0 - GROUP_PAD), round(y0 - GROUP_PAD - GROUP_TITLE), round(x1 - x0 + 2 * GROUP_PAD),
            round(y1 - y0 + 2 * GROUP_PAD + GROUP_TITLE)]


def group_rect(group: dict) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of a UI group."""
    x, y, w, h = group["bounding"]
    return x, y, x + w, y + h


def _group_problems(rects: dict[int, tuple[float, ...]], name: dict[int, str], groups: list[dict]) -> list[str]:
    problems = []
    boxes = [(g["title"], group_rect(g)) for g in groups]
    for k, (title, (al, at, ar, ab)) in enumerate(boxes):
        for other, (bl, bt, br, bb) in boxes[k + 1:]:
            if min(ar, br) - max(al, bl) > -NODE_GAP and min(ab, bb) - max(at, bt) > -NODE_GAP:
                problems.append(f"groups {title!r} and {other!r} are closer than {NODE_GAP}")
    for i, (left, top, right, bottom) in rects.items():
        inside = [t for t, (gl, gt, gr, gb) in boxes if gl <= left and right <= gr and gt <= top and bottom <= gb]
        touched = [t for t, (gl, gt, gr, gb) in boxes
                   if min(right, gr) > max(left, gl) and min(bottom, gb) > max(top, gt)]
        if len(inside) != 1 or touched != inside:
            problems.append(f"node {name[i]} lies in groups {inside} and touches {touched}: expected one group")
    return problems


def check_layout(ui: dict) -> list[str]:
    """What is wrong with a UI workflow's layout (rules: this module's top): overlapping nodes, links behind nodes, a
    node outside its one group, overlapping groups, a view too small to read or a node under the minimap of the
    fitted view."""
    nodes = {n["id"]: n for n in ui["nodes"]}
    rects = {i: (n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for i, n in nodes.items()}
    name = {i: f"{i} {n.get('title') or NODE_SPECS[n['type']].display_name}" for i, n in nodes.items()}
    problems = []
    ids = sorted(rects)
    for k, a in enumerate(ids):
        for b in ids[k + 1:]:
            (al, at, ar, ab), (bl, bt, br, bb) = rects[a], rects[b]
            if min(ar, br) - max(al, bl) > -NODE_GAP and min(ab, bb) - max(at, bt) > -NODE_GAP:
                problems.append(f"nodes {name[a]} and {name[b]} are closer than {NODE_GAP}")
    for link_id, src, src_slot, dst, dst_slot, _type in ui["links"]:
        curve = link_curve(_slot_pos(nodes[src], src_slot, True), _slot_pos(nodes[dst], dst_slot, False))
        behind = sorted({name[i] for i, (left, top, right, bottom) in rects.items() for x, y in curve
                         if left + SLOT_INSET < x < right - SLOT_INSET
                         and top - LINK_CLEARANCE < y < bottom + LINK_CLEARANCE})
        if behind:
            problems.append(f"link {link_id} ({name[src]} -> {name[dst]}) runs behind {behind}")
    problems += _group_problems(rects, name, ui.get("groups", []))
    view = fitted_view(ui["nodes"])
    if view["scale"] < MIN_FITTED_SCALE:
        problems.append(f"the fitted view's zoom {view['scale']:.3f} is below {MIN_FITTED_SCALE}: the graph is too "
                        f"wide or tall")
    s, (ox, oy) = view["scale"], view["offset"]
    for i, (_left, _top, right, bottom) in rects.items():
        if (right + ox) * s > FIT_MINIMAP_LEFT and (bottom + oy) * s > FIT_MINIMAP_TOP:
            problems.append(f"{name[i]} lies under the minimap in the fitted view")
    return problems


def bounds(nodes: list[dict]) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of UI nodes in canvas units, title bars included."""
    return (min(n["pos"][0] for n in nodes), min(n["pos"][1] for n in nodes) - TITLE_HEIGHT,
            max(n["pos"][0] + n["size"][0] for n in nodes), max(n["pos"][1] + n["size"][1] for n in nodes))


def saved_view(nodes: list[dict], name: str = "", groups: list[dict] | tuple = ()) -> dict:
    """``extra.ds`` of a UI workflow: the largest zoom (2 decimals, at most 1) at which every node and group lies in
    the uncovered part of a 1920x1080 window, the graph centred in it. Raises ValueError below
    :data:`MIN_SAVED_SCALE`."""
    boxes = [(n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in nodes] + [group_rect(g) for g in groups]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    width, height = VIEW_RIGHT - VIEW_LEFT, VIEW_BOTTOM - VIEW_TOP
    scale = int(min(1.0, width / (x1 - x0), height / (y1 - y0)) * 100) / 100
    while scale >= MIN_SAVED_SCALE:
        left = VIEW_LEFT + (width - (x1 - x0) * scale) / 2
        top = VIEW_TOP + (height - (y1 - y0) * scale) / 2
        offset = [round(left / scale - x0, 1), round(top / scale - y0, 1)]
        under_minimap = any((right + offset[0]) * scale > MINIMAP_LEFT and (bottom + offset[1]) * scale > MINIMAP_TOP
                            for _left, _top, right, bottom in boxes)
        if not under_minimap:
            return {"scale": scale, "offset": offset}
        scale = round(scale - 0.01, 2)
    raise ValueError(f"workflow {name}: {x1 - x0:.0f}x{y1 - y0:.0f} canvas units do not fit a 1920x1080 window at "
                     f"zoom {MIN_SAVED_SCALE} (the frontend would hide node text); place the nodes closer (at=...) or "
                     f"use narrower nodes")
