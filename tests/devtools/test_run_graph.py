"""devtools.run_graph: the shipped workflows loaded and given the command line's settings, in both formats."""

from __future__ import annotations

import devtools.workflows as bw
from devtools import run_graph


def test_settings_are_substituted_in_both_formats():
    for choice in run_graph.WORKFLOW_FILES:
        prompt, ui = run_graph.load_workflow(choice)
        run_graph.substitute(prompt, ui, {"width": 64, "height": 96, "steps": 2, "seed": 7, "cfg": 3.0,
                                        "image": "me.png", "video": "dance.mp4"})
        assert bw.api_from_ui(ui) == prompt
        by_type = {}
        for node in prompt.values():
            by_type.setdefault(node["class_type"], []).append(node["inputs"])
        sample = by_type["MagicAnimateTemporalSample"][0]
        assert (sample["steps"], sample["seed"], sample["cfg"]) == (2, 7, 3.0)
        assert (by_type["MagicAnimateAppearanceEncode"][0]["width"],
                by_type["MagicAnimateAppearanceEncode"][0]["height"]) == (64, 96)
        assert by_type["LoadVideo"][0]["file"] == "dance.mp4"
        if choice in ("basic", "long_video"):
            assert by_type["LoadImage"][0]["image"] == "me.png"
        else:
            assert "LoadImage" not in by_type
            assert (by_type["EmptyLatentImage"][0]["width"], by_type["KSampler"][0]["steps"]) == (64, 2)
            assert by_type["KSampler"][0]["cfg"] == 7.0  # the SD1.5 sampler keeps its own guidance
