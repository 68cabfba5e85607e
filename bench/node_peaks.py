"""Peak resident memory of each node of one ``scripts.animate`` run, so a whole run's growth per frame can be
attributed to the node that causes it.

Linux keeps a high-water mark of a process's resident size (``VmHWM``) that writing ``5`` to
``/proc/self/clear_refs`` resets. Each time ComfyUI's executor announces the next node, the mark since the last reset
is that of the node that just ran (the setup before the first node and the copy of the saved file after the last
count as phases of their own), and the mark is reset. Unlike ``ru_maxrss`` of the whole process, a node's peak is
then not hidden under an earlier, larger peak (model loading), and its growth with the number of frames shows::

    python -m bench.node_peaks OUT.json -- --workflow long_video --video pose.mp4 --cpu ...  # animate options

``OUT.json``: ``{"phases": [{"phase": "setup" | node id | "after", "class_type": ..., "start_rss_mib": ...,
"peak_rss_mib": ..., "end_heap_mib": {...}}, ...], "peak_rss_mib": <the largest>}``. A peak includes everything
resident when the node started (weights, the outputs ComfyUI keeps, memory the allocator kept from earlier nodes), so
``peak - start`` is what the node's own work adds; ``end_heap_mib`` (glibc's counts, :func:`heap_mib`) tells data
kept from allocator slack. Linux only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from devtools.proc_memory import peak_resident_bytes, reset_peak, resident_bytes


def _mib(n: int) -> float:
    return round(n / 2**20, 2)


def heap_mib() -> dict[str, float]:
    """glibc's ``mallinfo2``: bytes malloc has handed out (``in_use``), holds freed but not returned to the system
    (``free``), of which mapped separately (``mmapped``), in MiB; empty where that is not glibc >= 2.33. Resident
    memory that is ``free`` here is the allocator's slack, not data anyone keeps."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return {}
    mallinfo2.restype = MallInfo2
    info = mallinfo2()
    return {"in_use": round((info.uordblks + info.hblkhd) / 2**20, 2), "free": round(info.fordblks / 2**20, 2),
            "mmapped": round(info.hblkhd / 2**20, 2)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[1] != "--":
        print("usage: python -m bench.node_peaks OUT.json -- <scripts.animate options>", file=sys.stderr)
        return 2
    out, animate_args = Path(argv[0]), argv[2:]

    import devtools.run_graph as run_graph
    from scripts import animate

    phases: list[dict] = []
    current = {"phase": "setup", "class_type": None, "start_rss_mib": _mib(resident_bytes())}
    class_types: dict[str, str] = {}

    def close_phase(next_phase: dict) -> None:
        nonlocal current
        phases.append({**current, "peak_rss_mib": _mib(peak_resident_bytes()), "end_heap_mib": heap_mib()})
        current = {**next_phase, "start_rss_mib": _mib(reset_peak())}

    send_sync = run_graph.ConsoleServer.send_sync
    console_init = run_graph.ConsoleServer.__init__

    def init(self, prompt: dict) -> None:
        console_init(self, prompt)
        class_types.update({str(k): v["class_type"] for k, v in prompt.items()})

    def record(self, event: str, data: dict, sid=None) -> None:
        if event == "executing":
            node = data.get("node")
            close_phase({"phase": str(node), "class_type": class_types.get(str(node))} if node is not None
                        else {"phase": "after", "class_type": None})
        send_sync(self, event, data, sid)

    run_graph.ConsoleServer.__init__ = init
    run_graph.ConsoleServer.send_sync = record
    reset_peak()
    code = animate.main(animate_args)
    close_phase({})
    out.write_text(json.dumps({"phases": phases, "peak_rss_mib": max(p["peak_rss_mib"] for p in phases)}))
    return code


if __name__ == "__main__":
    sys.exit(main())
