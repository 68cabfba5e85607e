"""Per-frame data of one model evaluation, kept until the last window holding the frame is done.

Windows overlap, so a frame's cached data (ControlNet residuals, core control rows) is needed by every window that
holds it and by none after the last one. Dropping it then keeps memory flat in the video length
(docs/ARCHITECTURE.md, "Segments").
"""

from __future__ import annotations

from collections.abc import Iterable

from .windows import frame_counts

__all__ = ["FrameCache"]


class FrameCache(dict):
    """A dict ``frame index -> cached data`` that forgets a frame once no window still to run holds it.

    Built from the evaluation's windows (lists of frame indices) and its frame count; ``uses[i]`` is how many windows
    not yet done hold frame ``i``. Built without windows it only stores (nothing is ever dropped).
    """

    def __init__(self, windows: list[list[int]] | None = None, num_frames: int = 0) -> None:
        super().__init__()
        self.uses: list[int] = frame_counts(windows, num_frames) if windows else []

    def window_done(self, index_list: Iterable[int]) -> None:
        """Count a window as done; drop the entries of its frames that no later window holds."""
        for i in set(int(i) for i in index_list):
            if i < len(self.uses):
                self.uses[i] -= 1
                if self.uses[i] <= 0:
                    self.pop(i, None)
