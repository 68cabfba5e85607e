"""The model folders registered with ComfyUI's folder_paths, their listings, and the one resolver for model names.

``models/magicanimate/`` holds the three MagicAnimate networks (names and kinds in ``magicanimate.model_layout``);
motion LoRAs are listed from ``models/animatediff_motion_lora/`` and core's ``models/loras/``.

A model name that reaches a node is hostile (``/prompt`` accepts any JSON): it is only ever used as a key into the
listing of the registered ``magicanimate`` folders, never joined to a path. The listing is walked with symlinks
followed (a link the user placed there works wherever it points) but loop-safe (real paths tracked), bounded in depth
and entries, and cached until a walked folder's (or a config.json's) mtime changes, like core
``folder_paths.get_filename_list``; so a bad folder can only slow the listing itself. An entry that cannot be used
(a config.json that is not a regular file, not UTF-8, not JSON or nested too deeply; a weights file that is a FIFO,
a broken link or unreadable) is left out of the dropdowns with one warning naming it and saying why, never its bytes:
no file can stop the pack from loading, break ``/object_info`` or hide the good entries.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from dataclasses import dataclass, field

import folder_paths

from ..errors import CheckpointError
from ..model_layout import (
    BY_KIND,
    CHECKPOINT_EXTENSIONS,
    CONFIG_FILE,
    CORE_LORA_FOLDER,
    DIFFUSERS_WEIGHT_FILES,
    FETCH_COMMAND,
    KINDS,
    MOTION_LORA_FOLDER,
    config_kind,
)
from ..model_layout import MAGICANIMATE_FOLDER as FOLDER

#: Bounds of one walk (per root): folders deeper than MAX_DEPTH below the root and entries past MAX_ENTRIES are skipped.
MAX_DEPTH = 8
MAX_ENTRIES = 20_000
#: A config.json larger than this is not a diffusers config (the real ones are ~2 kB).
MAX_CONFIG_BYTES = 1 << 20

log = logging.getLogger("MagicAnimate")


def register() -> None:
    """Add ``models/magicanimate`` to the known model folders, keeping paths added by extra_model_paths.yaml."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    paths, _ = folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))
    if default not in paths:
        paths = [default] + list(paths)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(CHECKPOINT_EXTENSIONS))


def roots() -> list[str]:
    register()
    return [p for p in folder_paths.get_folder_paths(FOLDER) if os.path.isdir(p)]


def _shown(name: str, limit: int = 120) -> str:
    """A name as a message or log line may show it: quoted, printable characters only, at most ``limit``."""
    text = "".join(ch if ch.isprintable() else "?" for ch in name)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _read_config_kind(path: str) -> tuple[str | None, str | None]:
    """``(kind, None)`` for a diffusers ``config.json`` (kind ``None``: another kind of model, e.g. a VAE), or
    ``(None, why)`` when the file cannot be used. Never blocks (a FIFO or a device is refused before any read) and
    never reads more than MAX_CONFIG_BYTES; ``why`` never quotes the file's bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        return None, f"its config.json cannot be opened ({exc.strerror or type(exc).__name__})"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, "its config.json is not a regular file"
        if info.st_size > MAX_CONFIG_BYTES:
            return None, f"its config.json is larger than {MAX_CONFIG_BYTES} bytes"
        with os.fdopen(fd, "rb") as fh:
            fd = -1
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        return None, f"its config.json cannot be read ({exc.strerror or type(exc).__name__})"
    finally:
        if fd >= 0:
            os.close(fd)
    try:
        config = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "its config.json is not UTF-8 text"
    except (ValueError, RecursionError):
        return None, "its config.json is not valid JSON (malformed, truncated or nested too deeply)"
    return config_kind(config), None


def _unreadable(path: str) -> str | None:
    """Why a weights file cannot be used (not a regular file, no read permission), or None."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or type(exc).__name__})"
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file"
    if not os.access(path, os.R_OK):
        return "it cannot be read (no read permission)"
    return None


@dataclass
class Listing:
    """One walk of the registered folders: name -> path per kind, and the mtimes that keep it valid."""

    roots: tuple[str, ...]
    entries: dict[str, dict[str, str]] = field(default_factory=lambda: {k: {} for k in KINDS})
    mtimes: dict[str, float] = field(default_factory=dict)
    truncated: bool = False
    #: One line per entry left out of the dropdowns (logged once per walk).
    left_out: list[str] = field(default_factory=list)

    def still_valid(self, current_roots: tuple[str, ...]) -> bool:
        if current_roots != self.roots:
            return False
        for path, mtime in self.mtimes.items():
            try:
                if os.stat(path).st_mtime != mtime:
                    return False
            except OSError:
                return False
        return True


def _entry(e: os.DirEntry) -> tuple[str, bool, bool]:
    """(name, is a folder, is a file), both following links; a broken or looping link is neither."""
    try:
        return e.name, e.is_dir(), e.is_file()
    except OSError:
        return e.name, False, False


def _walk_root(root: str, listing: Listing) -> None:
    """Add ``root``'s files and diffusers folders to ``listing``; loop-safe, at most MAX_DEPTH / MAX_ENTRIES."""
    seen: set[str] = set()
    stack: list[tuple[str, str, int]] = [(root, "", 0)]  # (path as reached, name relative to root, depth)
    count = 0
    while stack:
        path, rel, depth = stack.pop()
        try:
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            listing.mtimes[path] = os.stat(path).st_mtime
            with os.scandir(path) as it:
                children = sorted(_entry(e) for e in it)
        except OSError:
            continue
        # Any entry that is not a folder counts (a FIFO config.json still makes a diffusers folder, left out below).
        names = {name for name, is_dir, _f in children if not is_dir}
        if CONFIG_FILE in names and any(w in names for w in DIFFUSERS_WEIGHT_FILES):
            cfg = os.path.join(path, CONFIG_FILE)
            try:
                listing.mtimes[cfg] = os.stat(cfg).st_mtime
            except OSError:
                pass
            kind, why = _read_config_kind(cfg)
            weights = [os.path.join(path, w) for w in DIFFUSERS_WEIGHT_FILES if w in names]
            why = why or (None if kind is None else next(filter(None, map(_unreadable, weights)), None))
            if why is not None and rel:
                listing.left_out.append(f"{_shown(rel)}: {why}")
            elif kind is not None and rel:
                listing.entries[kind][rel] = path
            continue  # a diffusers folder: its weight files are not temporal checkpoints
        subdirs = []
        for name, is_dir, _is_file in children:
            count += 1
            if count > MAX_ENTRIES:
                listing.truncated = True
                return
            child_rel = f"{rel}/{name}" if rel else name
            if name.lower().endswith(CHECKPOINT_EXTENSIONS) and not is_dir:
                why = _unreadable(os.path.join(path, name))
                if why is None:
                    listing.entries["temporal"][child_rel] = os.path.join(path, name)
                else:
                    listing.left_out.append(f"{_shown(child_rel)}: {why}")
            elif is_dir and depth < MAX_DEPTH:
                subdirs.append((os.path.join(path, name), child_rel, depth + 1))
            elif is_dir:
                listing.truncated = True
        stack.extend(reversed(subdirs))


_cache: Listing | None = None
_lock = threading.Lock()


def listing() -> Listing:
    """The cached listing of every registered ``magicanimate`` folder, walked again only when something changed."""
    global _cache
    with _lock:
        current = tuple(roots())
        if _cache is not None and _cache.still_valid(current):
            return _cache
        fresh = Listing(roots=current)
        for root in current:
            try:
                _walk_root(root, fresh)
            except Exception as exc:  # a listing never stops the pack from loading
                fresh.left_out.append(f"part of {_shown(root)} ({type(exc).__name__})")
        for line in fresh.left_out:
            log.warning("MagicAnimate: left out of the models/%s dropdowns: %s", FOLDER, line)
        if fresh.truncated:
            log.warning("MagicAnimate: the models/magicanimate listing stopped after %d entries or %d folder levels; "
                        "move unrelated files out of that folder.", MAX_ENTRIES, MAX_DEPTH)
        _cache = fresh
        return fresh


def _sorted(names: list[str], hint: str) -> list[str]:
    return sorted(names, key=lambda n: (hint not in n.lower(), n))


def names(kind: str) -> list[str]:
    """Dropdown options for ``kind`` ("temporal", "appearance" or "controlnet"), likely ones first."""
    return _sorted(list(listing().entries[kind]), BY_KIND[kind].likely)


def describe(name: object, limit: int = 80) -> str:
    """A model name as a message may show it: quoted, printable, at most ``limit`` characters; an absolute name or one
    with ``..`` is not echoed (decided from the text alone, never from what exists on disk)."""
    if not isinstance(name, str):
        return f"a {type(name).__name__} value"
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\", "~")) or ":" in name[:3] or ".." in parts:
        return "a path outside the folder"
    return _shown(name, limit)


def refusal(kind: str, name: object, where: str = "") -> str:
    """The one message for any model name that is not in the listing (says nothing about paths elsewhere)."""
    model = BY_KIND[kind]
    prefix = f"{where}: " if where else ""
    return (f"{prefix}{describe(name)} is not {model.listed_as} listed in models/{FOLDER}. Pick one from the list "
            f"(press R to refresh it after adding files), or put {model.put_hint} in ComfyUI/models/{FOLDER}/ (run "
            f"`{FETCH_COMMAND}` in the pack's folder to fetch every model file).")


def is_listed(kind: str, name: object) -> bool:
    return isinstance(name, str) and name in listing().entries[kind]


def resolve(name: object, kind: str = "temporal", where: str = "Load MagicAnimate") -> str:
    """Path of the listed ``kind`` entry called ``name``; a ``CheckpointError`` (a ``MagicAnimateError``) for anything
    else."""
    if isinstance(name, str):
        path = listing().entries[kind].get(name)
        if path is not None and os.path.exists(path):
            return path
    raise CheckpointError(refusal(kind, name, where))


def register_motion_lora_folder() -> None:
    """Add ``models/animatediff_motion_lora`` to the known model folders unless another pack did already."""
    if MOTION_LORA_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[MOTION_LORA_FOLDER] = (
            [os.path.join(folder_paths.models_dir, MOTION_LORA_FOLDER)], set(folder_paths.supported_pt_extensions))


def _lora_listing() -> dict[str, tuple[str, str]]:
    """Dropdown name -> (folder name, file name): animatediff_motion_lora files first, then core ``loras``."""
    register_motion_lora_folder()
    out: dict[str, tuple[str, str]] = {}
    for folder in (MOTION_LORA_FOLDER, CORE_LORA_FOLDER):
        try:
            files = folder_paths.get_filename_list(folder)
        except KeyError:  # a ComfyUI without that folder name
            continue
        for name in files:
            out.setdefault(name, (folder, name))
    return out


def motion_lora_names() -> list[str]:
    """Motion LoRA dropdown options; names with "motion" or "mm" first (AnimateDiff's motion LoRAs say so)."""
    return sorted(_lora_listing(), key=lambda n: (not any(h in n.lower() for h in ("motion", "mm_", "v2_lora")), n))


def resolve_motion_lora(name: object, where: str = "Motion LoRA (MagicAnimate)") -> str:
    """Path of the listed LoRA ``name``; a ``CheckpointError`` for any name not in the listing."""
    entry = _lora_listing().get(name) if isinstance(name, str) else None
    path = folder_paths.get_full_path(*entry) if entry is not None else None
    if path is not None and os.path.isfile(path):
        return path
    raise CheckpointError(f"{where}: {describe(name)} is not a LoRA file listed in models/{MOTION_LORA_FOLDER} or "
                          f"models/{CORE_LORA_FOLDER}. Pick one from the list (press R to refresh it after adding "
                          "files).")
