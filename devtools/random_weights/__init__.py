"""Random-weight model files in the real layouts (MagicAnimate's three networks, SD1.5 checkpoint and VAE).

* :mod:`.configs`: the network sizes (:data:`TINY`, :data:`FULL`) and the diffusers ``config.json`` contents;
* :mod:`.model_files`: MagicAnimate's temporal checkpoint, appearance encoder and DensePose ControlNet (shapes from
  :mod:`devtools.oracle`), and loading them back into the oracle;
* :mod:`.sd15_files`: a full-size SD1.5 checkpoint and VAE, and a whole ComfyUI ``models`` tree;
* :mod:`.networks`: the three MagicAnimate networks written and loaded through the pack's loaders (benches).
"""

from .configs import FULL, TINY

__all__ = ["FULL", "TINY"]
