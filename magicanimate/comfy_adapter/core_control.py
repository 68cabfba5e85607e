"""ControlNets applied through core nodes (ControlNetApplyAdvanced, chains of them) get each window's hint frames,
and each frame's output is computed once per model evaluation (one sampler step), not once per window holding it.

Core ``ControlNet.get_control`` fits its hint to the batch with ``broadcast_image_to``, which takes the first frames:
with context windows every window would be steered by hint frames ``0..L-1``. The segment handler instead puts in each
window's conds a stand-in for the user's control chain (docs/ARCHITECTURE.md, "ControlNets applied through core
nodes"):

- ``WindowRowsControl`` (control chains of core types, see :func:`rows_are_independent`): core ``calc_cond_batch``
  calls ``get_control(x, t, cond, batched_number, transformer_options)`` with ``x`` = ``batched_number`` chunks
  (cond/uncond, ``transformer_options["uuids"]``) of the window's frames. Each output row (one frame of one chunk)
  depends only on that row's latent, timestep and cond rows and on the frame's hint, so the stand-in runs the chain
  only on the rows not yet computed in this evaluation (as one batch, cond and uncond together as core batches them)
  and keeps every row until the last window holding its frame is done (``StepControls.window_done``): memory is
  bounded as for our own DensePose ControlNet, and the numbers are the per-window path's (up to the last bits of
  float rounding that a different batch size can give);
- otherwise a shallow copy of every control in the chain whose ``cond_hint_original`` holds the window's own frames
  (the per-window path): core then prepares (resizes, encodes) and runs it on the whole window.

On the first path, the hints of plain core ControlNets are fitted to the latent size once per frame per sampling run
(:class:`PreparedHints`), not again for every frame of every step.

In both cases the user's control objects (cached node outputs) are never modified; the copies live for one model
evaluation, are shared by all conds of a window (so cond and uncond still batch together) and carry the state
``pre_run`` set on the originals.
"""

from __future__ import annotations

import copy
import numbers

import comfy.controlnet
import comfy.utils
import torch

from ..frame_cache import FrameCache

__all__ = ["window_hint", "control_for_window", "resize_conds_controls", "rows_are_independent", "StepControls",
           "WindowRowsControl", "PreparedHints"]

#: Core control classes whose ``get_control`` computes each batch row from that row alone: the hint is cut/broadcast
#: per frame, the networks (cldm ControlNet, Control-LoRA, SD3.5 ControlNet, T2I adapters) have no batch-wide
#: operation, the timestep range test reads ``t[0]`` (one timestep per evaluation) and ``control_merge`` works per
#: level. Exact types only: a subclass from another pack (Advanced-ControlNet's latent keyframes index the batch, its
#: masks and timestep keyframes may too) may depend on the whole batch, so it keeps the per-window path.
_ROW_LOCAL_TYPES = (comfy.controlnet.ControlNet, comfy.controlnet.ControlLora, comfy.controlnet.ControlNetSD35,
                    comfy.controlnet.T2IAdapter)


def window_hint(hint: torch.Tensor, index_list: list[int]) -> torch.Tensor:
    """Frames ``index_list`` of a hint ``(T, C, H, W)``; frames past the hint's end repeat its last frame.

    The last-frame padding is what MagicAnimate does to its own pose frames (docs/ARCHITECTURE.md, "Padding,
    cropping and windows").
    """
    last = hint.shape[0] - 1
    frames = [min(int(i), last) for i in index_list]
    if frames == list(range(frames[0], frames[0] + len(frames))):  # consecutive: a slice, no index tensor to copy
        return hint[frames[0]:frames[0] + len(frames)].clone()
    idx = torch.tensor(frames, dtype=torch.long, device=hint.device)
    return hint.index_select(0, idx)


def _per_frame_hint(control: comfy.controlnet.ControlBase) -> bool:
    hint = getattr(control, "cond_hint_original", None)
    return isinstance(hint, torch.Tensor) and hint.ndim == 4 and hint.shape[0] > 1


def _needs_window(control: comfy.controlnet.ControlBase | None) -> bool:
    while control is not None:
        if _per_frame_hint(control):
            return True
        control = getattr(control, "previous_controlnet", None)
    return False


def rows_are_independent(control: comfy.controlnet.ControlBase | None) -> bool:
    """Whether every control of the chain computes each output row from that row alone (see ``_ROW_LOCAL_TYPES``).

    Extra concat inputs (inpainting masks) with several frames are tiled to the batch by core
    (``repeat_to_batch_size``), not cut per frame, so a chain holding one keeps the per-window path.
    """
    while control is not None:
        if type(control) not in _ROW_LOCAL_TYPES:
            return False
        for extra in getattr(control, "extra_concat_orig", None) or []:
            if not isinstance(extra, torch.Tensor) or (extra.ndim > 0 and extra.shape[0] > 1):
                return False
        control = getattr(control, "previous_controlnet", None)
    return True


def control_for_window(control: comfy.controlnet.ControlBase, index_list: list[int],
                       cache: dict) -> comfy.controlnet.ControlBase:
    """``control`` (and its ``previous_controlnet`` chain) with per-frame hints cut to the window's frames.

    ``cache`` maps ``(id(control), window)`` to ``(control, copy)`` for one model evaluation. Controls whose hint is a
    single image (or not a tensor) are kept as they are, and a chain that needs no cutting is returned unchanged.
    """
    if not _needs_window(control):
        return control
    key = (id(control), tuple(int(i) for i in index_list))
    hit = cache.get(key)
    if hit is not None and hit[0] is control:
        return hit[1]
    clone = copy.copy(control)
    if _per_frame_hint(control):
        clone.cond_hint_original = window_hint(control.cond_hint_original, index_list)
        clone.cond_hint = None  # prepared again from the window's frames by core get_control
    previous = getattr(control, "previous_controlnet", None)
    if previous is not None:
        clone.previous_controlnet = control_for_window(previous, index_list, cache)
    cache[key] = (control, clone)
    return clone


def _prepared_by_core_alone(control: comfy.controlnet.ControlBase) -> bool:
    """Whether core's ``ControlNet.get_control`` prepares this control's hint by resizing, ``preprocess_image`` and a
    cast alone (no VAE encoding, no extra concat): all per frame, so the pack may prepare each frame once."""
    return (type(control).get_control is comfy.controlnet.ControlNet.get_control
            and getattr(control, "vae", None) is None and getattr(control, "latent_format", None) is None
            and not getattr(control, "extra_concat_orig", None))


class PreparedHints:
    """Per-frame hints of core ControlNets as core's ``ControlNet.get_control`` prepares them (fitted to the latent
    size with its upscale method and centre crop, ``preprocess_image``, cast to the ControlNet's dtype), made once per
    frame per sampling run instead of once per frame per step. Kept on the hint's own device (the CPU for core's
    Load Image / Load Video): at 512x512 in fp16 1.5 MB per frame, half of the float32 hint the control already holds;
    each call copies only the frames it asks for to the sampling device. Cleared when the run ends
    (``SegmentHandler.end_run``)."""

    def __init__(self) -> None:
        # id(control) -> (control, its hint tensor, (height, width, dtype, method), {frame: (1, C, H, W)})
        self._entries: dict[int, tuple] = {}

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return sum(len(entry[3]) for entry in self._entries.values())

    def frames(self, control: comfy.controlnet.ControlNet, index_list: list[int],
               x_noisy: torch.Tensor) -> torch.Tensor:
        """The prepared hint frames ``index_list`` (past the hint's end: its last frame), ``(F, C, H, W)`` on
        ``x_noisy``'s device, for latents of ``x_noisy``'s height and width."""
        original = control.cond_hint_original
        dtype = control.manual_cast_dtype if control.manual_cast_dtype is not None else control.control_model.dtype
        key = (x_noisy.shape[-2] * control.compression_ratio, x_noisy.shape[-1] * control.compression_ratio, dtype,
               control.upscale_algorithm)
        entry = self._entries.get(id(control))
        if entry is None or entry[0] is not control or entry[1] is not original or entry[2] != key:
            entry = self._entries[id(control)] = (control, original, key, {})
        done = entry[3]
        last = original.shape[0] - 1
        wanted = [min(int(i), last) for i in index_list]
        missing = sorted(set(wanted).difference(done))
        if missing:
            fitted = comfy.utils.common_upscale(window_hint(original, missing), key[1], key[0], key[3], "center")
            fitted = control.preprocess_image(fitted).to(dtype=dtype)
            for n, i in enumerate(missing):
                done[i] = fitted[n:n + 1]
        return torch.cat([done[i] for i in wanted]).to(x_noisy.device)

    def fit(self, original: comfy.controlnet.ControlBase, chain: comfy.controlnet.ControlBase,
            index_list: list[int], x_noisy: torch.Tensor) -> None:
        """Give every per-window copy in ``chain`` (of ``original``'s chain) whose hint core would prepare alone its
        prepared frames, so core's ``get_control`` finds a hint of the right size and prepares nothing."""
        while original is not None and chain is not None and chain is not original:
            if _per_frame_hint(original) and _prepared_by_core_alone(original):
                chain.cond_hint = self.frames(original, index_list, x_noisy)
            original = getattr(original, "previous_controlnet", None)
            chain = getattr(chain, "previous_controlnet", None)


class StepControls:
    """Core control state of one model evaluation (one ``SegmentHandler.execute``).

    ``clones``: the per-window copies (:func:`control_for_window`); ``rows``: a :class:`FrameCache` frame ->
    ``{(id(control), uuid): entry}`` where an entry is ``None`` (the chain is off at this timestep) or
    ``{"input"|"middle"|"output": [(1, C, h, w) or None per level]}``; a frame's rows are dropped once the last window
    holding it is done. ``row_frames`` counts the frames that went through the chain, for tests and benchmarks.
    ``hints``: the run's :class:`PreparedHints` (``None``: core prepares every window's hint itself).
    """

    def __init__(self, windows: list[list[int]] | None = None, num_frames: int = 0,
                 hints: PreparedHints | None = None) -> None:
        self.hints = hints
        self.clones: dict = {}
        self.rows = FrameCache(windows, num_frames)
        self.stand_ins: dict = {}
        self.row_frames = 0

    def window_done(self, index_list: list[int]) -> None:
        """The window ``index_list`` ran: drop the rows of frames no later window of this evaluation holds."""
        self.rows.window_done(index_list)


def _row_cond(cond: dict, batch: int, rows: torch.Tensor) -> dict | None:
    """The rows ``rows`` of every per-row tensor of a batched cond dict; ``None`` when a value cannot be cut safely."""
    out = {}
    for name, value in cond.items():
        if isinstance(value, torch.Tensor):
            if value.ndim > 0 and value.shape[0] == batch:
                value = value.index_select(0, rows.to(value.device))
            elif value.ndim > 0 and value.shape[0] != 1:
                return None
        elif not (value is None or isinstance(value, (dict, str, numbers.Number))):
            return None  # e.g. a list of tensors: which rows it holds is unknown
        out[name] = value
    return out


def _same_layout(entries: list[dict]) -> bool:
    first = entries[0]
    for e in entries[1:]:
        if e.keys() != first.keys():
            return False
        for name in first:
            if len(e[name]) != len(first[name]):
                return False
            if any((a is None) != (b is None) for a, b in zip(e[name], first[name], strict=True)):
                return False
    return True


class WindowRowsControl:
    """Stands for a user's core control chain in one window's conds: only rows not yet computed this step are run.

    Attribute reads fall through to the per-window copy of the chain (what core would see on the per-window path).
    """

    def __init__(self, control: comfy.controlnet.ControlBase, index_list: list[int], step: StepControls) -> None:
        self.control = control
        self.index_list = [int(i) for i in index_list]
        self.step = step

    def __getattr__(self, name: str):
        if name in ("control", "index_list", "step"):  # not set yet (copy/pickle): no recursion
            raise AttributeError(name)
        return getattr(self.window_chain(), name)

    def window_chain(self) -> comfy.controlnet.ControlBase:
        return control_for_window(self.control, self.index_list, self.step.clones)

    def get_control(self, x_noisy: torch.Tensor, t: torch.Tensor, cond: dict, batched_number: int,
                    transformer_options: dict) -> dict | None:
        """Core's control dict for the window's batch ``(batched_number * f, C, h, w)``, rows chunk-major."""
        frames = self.index_list
        f, batch = len(frames), x_noisy.shape[0]
        uuids = transformer_options.get("uuids") if isinstance(transformer_options, dict) else None
        if (uuids is None or len(uuids) != batched_number or batch != batched_number * f or t.ndim != 1
                or t.shape[0] != batch):
            return self.window_chain().get_control(x_noisy, t, cond, batched_number, transformer_options)
        keys = [(id(self.control), uuid) for uuid in uuids]
        first_pos = {}
        for p, i in enumerate(frames):
            first_pos.setdefault(i, p)
        groups: dict[tuple[int, ...], list[int]] = {}
        for k, key in enumerate(keys):
            todo = tuple(i for i in first_pos if key not in self.step.rows.get(i, {}))
            if todo:
                groups.setdefault(todo, []).append(k)
        for todo, chunks in groups.items():
            rows = torch.tensor([k * f + first_pos[i] for k in chunks for i in todo], dtype=torch.long,
                                device=x_noisy.device)
            sub_cond = _row_cond(cond, batch, rows)
            if sub_cond is None:
                return self.window_chain().get_control(x_noisy, t, cond, batched_number, transformer_options)
            chain = control_for_window(self.control, list(todo), self.step.clones)
            if self.step.hints is not None:
                self.step.hints.fit(self.control, chain, list(todo), x_noisy)
            out = chain.get_control(x_noisy.index_select(0, rows), t.index_select(0, rows.to(t.device)), sub_cond,
                                    len(chunks), transformer_options)
            self.step.row_frames += len(todo)
            for n, k in enumerate(chunks):
                for m, i in enumerate(todo):
                    r = n * len(todo) + m
                    entry = None if out is None else {
                        name: [None if o is None else o[r:r + 1] for o in levels] for name, levels in out.items()}
                    self.step.rows.setdefault(i, {})[keys[k]] = entry
        entries = [self.step.rows[i][key] for key in keys for i in frames]
        if all(e is None for e in entries):
            return None
        if any(e is None for e in entries) or not _same_layout(entries):
            # Cannot happen with one timestep per evaluation; the per-window path is the safe answer if it does.
            return self.window_chain().get_control(x_noisy, t, cond, batched_number, transformer_options)
        # torch.cat copies even one part: the UNet's consumers get fresh tensors, the cached rows stay intact.
        return {name: [None if level is None else torch.cat([e[name][n] for e in entries], dim=0)
                       for n, level in enumerate(levels)] for name, levels in entries[0].items()}


def _for_window(control: comfy.controlnet.ControlBase, index_list: list[int], step: StepControls):
    if not _needs_window(control):
        return control
    if not rows_are_independent(control):
        return control_for_window(control, index_list, step.clones)
    key = (id(control), tuple(int(i) for i in index_list))
    hit = step.stand_ins.get(key)
    if hit is None or hit.control is not control:
        hit = step.stand_ins[key] = WindowRowsControl(control, index_list, step)
    return hit


def resize_conds_controls(conds: list[dict] | None, index_list: list[int], step: StepControls) -> list[dict] | None:
    """Replace the ``control`` entry of every cond dict by its stand-in for this window (new dicts; inputs untouched).
    """
    if conds is None:
        return None
    out = []
    for cond in conds:
        control = cond.get("control") if isinstance(cond, dict) else None
        if control is not None:
            cond = dict(cond)
            cond["control"] = _for_window(control, index_list, step)
        out.append(cond)
    return out
