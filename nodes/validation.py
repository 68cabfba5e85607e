"""Queue-time checks of widget values against the node's own schema (every value reaching a node is hostile).

ComfyUI 0.3.75 does not check V3 combo values against their options, and its min/max checks let NaN through (every
comparison with NaN is false). A node's ``validate_inputs`` calls :func:`check_widgets` so a bad value is an HTTP 400
from ``/prompt`` naming the node and the input; ``execute`` calls :func:`refuse_invalid` for values that arrive through
a link (not checked at queue time). Note: ComfyUI skips its own min/max check for every input ``validate_inputs``
names, so the range is checked here too.
"""

from __future__ import annotations

import math

from ..magicanimate.comfy_adapter import model_folders
from ..magicanimate.errors import MagicAnimateError
from .api import io

#: Combo inputs whose options are the model listing: their message comes from the resolver (one message for all).
_MODEL_COMBOS = {"temporal_checkpoint": "temporal", "appearance_encoder": "appearance",
                 "densepose_controlnet": "controlnet"}


def _short(value: object, limit: int = 60) -> str:
    """A widget value as a message shows it: strings quoted, everything printable, at most ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    text = text if len(text) <= limit else text[:limit] + "..."
    return repr(text) if isinstance(value, str) else text


def widget_problems(node_cls, values: dict[str, object]) -> list[str]:
    """Messages for every value in ``values`` (input name -> value; None = linked, checked later) the schema refuses."""
    schema = node_cls.define_schema()
    inputs = {inp.id: inp for inp in schema.inputs}
    where = schema.display_name or schema.node_id
    problems = []
    for name, value in values.items():
        inp = inputs.get(name)
        if value is None or inp is None:
            continue
        if isinstance(inp, io.Combo.Input):
            if name in _MODEL_COMBOS:
                if not model_folders.is_listed(_MODEL_COMBOS[name], value):
                    problems.append(model_folders.refusal(_MODEL_COMBOS[name], value, f"{where} {name}"))
            elif value not in list(inp.options or []):
                opts = list(inp.options or [])
                shown = ", ".join(opts[:12]) + (", ..." if len(opts) > 12 else "")
                problems.append(f"{where}: {name} {_short(value)} is not one of its options ({shown}); pick one from "
                                "the list.")
        elif isinstance(inp, (io.Float.Input, io.Int.Input)):
            kind = "a number" if isinstance(inp, io.Float.Input) else "a whole number"
            try:
                number = float(value)
            except (TypeError, ValueError, OverflowError):
                problems.append(f"{where}: {name} is {_short(value)}; it must be {kind}.")
                continue
            if isinstance(inp, io.Int.Input) and isinstance(value, float) and not value.is_integer():
                problems.append(f"{where}: {name} is {value}; it must be a whole number.")
                continue
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{where}: {name} is {value}; it must be a finite number between {inp.min} and "
                                f"{inp.max}.")
                continue
            if (inp.min is not None and number < inp.min) or (inp.max is not None and number > inp.max):
                problems.append(f"{where}: {name} is {value}; it must be between {inp.min} and {inp.max}.")
    return problems


def check_widgets(node_cls, **values: object) -> bool | str:
    """``validate_inputs`` result: True, or one message naming the node, the input(s) and the fix."""
    problems = widget_problems(node_cls, values)
    return " ".join(problems) if problems else True


def refuse_invalid(node_cls, **values: object) -> None:
    """Raise :class:`MagicAnimateError` for values :func:`widget_problems` refuses (e.g. a NaN from a linked node)."""
    problems = widget_problems(node_cls, values)
    if problems:
        raise MagicAnimateError(" ".join(problems))
