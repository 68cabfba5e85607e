"""The pack registers its eight V3 nodes through comfy_entrypoint only, each input with a tooltip."""

import asyncio

from devtools.pack import load_pack


def test_entrypoint_lists_eight_nodes_with_tooltips_and_no_v1_mappings():
    pack = load_pack()
    assert not hasattr(pack, "NODE_CLASS_MAPPINGS")
    ext = asyncio.run(pack.comfy_entrypoint())
    nodes = asyncio.run(ext.get_node_list())
    ids = [n.define_schema().node_id for n in nodes]
    assert ids == ["MagicAnimateLoader", "MagicAnimateAppearanceEncode", "MagicAnimatePoseControl",
                   "MagicAnimateSegmentFuse", "MagicAnimateTemporalSample", "MagicAnimatePoseAlign",
                   "MagicAnimateMotionLoRA", "MagicAnimateSaveVideo"]
    for node in nodes:
        schema = node.define_schema()
        assert schema.category == "MagicAnimate" and schema.description
        for inp in schema.inputs:
            assert inp.tooltip and len(inp.tooltip) > 10, (schema.node_id, inp.id)


def test_models_folder_is_registered_with_folder_paths():
    import folder_paths

    load_pack()
    paths = folder_paths.get_folder_paths("magicanimate")
    assert any(p.endswith("models/magicanimate") or p.endswith("models\\magicanimate") for p in paths)
