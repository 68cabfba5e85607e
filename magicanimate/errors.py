"""User-facing errors.

A :class:`MagicAnimateError` is raised for every problem a user can fix (a wrong file, a bad input); its message names
the file or input at fault and what to do. ComfyUI shows the message in the UI instead of a deep stack trace.
"""


class MagicAnimateError(ValueError):
    """A user mistake or an unusable file; the message says what is wrong and how to fix it."""


class CheckpointError(MagicAnimateError):
    """A model file that cannot be used (wrong architecture, truncated, unsafe pickle, missing keys)."""
