"""ComfyUI-MagicAnimate: MagicAnimate (arXiv 2311.16498) as ComfyUI nodes.

Registered only through ``comfy_entrypoint`` (ComfyUI's V3 node API). Model files go in ComfyUI/models/magicanimate/.
"""

from .magicanimate.comfy_adapter import model_folders
from .nodes.api import ComfyExtension

model_folders.register()

# Served at /extensions/<this folder>/: docs/<node id>.md are the pages of the frontend's node help panel.
WEB_DIRECTORY = "./web"


class MagicAnimateExtension(ComfyExtension):
    async def get_node_list(self) -> list:
        from .nodes import NODES

        return list(NODES)


async def comfy_entrypoint() -> MagicAnimateExtension:
    return MagicAnimateExtension()
