"""The MagicAnimate MODEL composed with core ComfyUI nodes, on tiny random models.

Each test is one row of the README table "Composing with core nodes" (core ControlNets: test_core_control.py).
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import SIZE, sample_without_node, temporal_sample, text

# --- attention patches: PerturbedAttentionGuidance, SelfAttentionGuidance -------------------------------------------

def pag_by_hand(model, scale: float):
    """PAG's definition, installed without its node: an extra conditional pass whose middle self-attention is the
    identity (``v``), on the exact 3-part key of that block, then ``cfg + (cond - perturbed) * scale``."""
    import comfy.model_patcher
    import comfy.samplers

    m = model.clone()

    def post_cfg(args):
        options = comfy.model_patcher.set_model_options_patch_replace(
            args["model_options"].copy(), lambda q, k, v, extra: v, "attn1", "middle", 0, 0)
        (perturbed,) = comfy.samplers.calc_cond_batch(args["model"], [args["cond"]], args["input"], args["sigma"],
                                                      options)
        return args["denoised"] + (args["cond_denoised"] - perturbed) * scale

    m.set_model_sampler_post_cfg_function(post_cfg)
    return m


@pytest.mark.parametrize("appearance", [True, False])
def test_perturbed_attention_guidance_acts_on_the_magicanimate_model(tiny_models, appearance):
    from comfy_extras.nodes_pag import PerturbedAttentionGuidance

    model = tiny_models[0].model
    plain = sample_without_node(tiny_models, 1, model, appearance)
    pag = sample_without_node(tiny_models, 1, PerturbedAttentionGuidance.execute(model, 3.0).result[0], appearance)
    by_hand = sample_without_node(tiny_models, 1, pag_by_hand(model, 3.0), appearance)
    assert (pag - plain).abs().max() > 1e-3          # PAG does something ...
    torch.testing.assert_close(pag, by_hand, rtol=1e-4, atol=1e-5)  # ... and exactly what it does on a plain UNet


def test_self_attention_guidance_runs_and_its_term_does_not_depend_on_the_appearance(tiny_models):
    """SAG records the unconditional middle attention; MagicAnimate leaves unconditional rows plain, so SAG's added term
    is the same with and without the appearance (and its recording replace is not lost: no AttributeError)."""
    from comfy_extras.nodes_sag import SelfAttentionGuidance

    model = tiny_models[0].model
    sag = SelfAttentionGuidance.execute(model, 0.8, 2.0).result[0]
    with_app = [sample_without_node(tiny_models, 1, m, True) for m in (model, sag)]
    without = [sample_without_node(tiny_models, 1, m, False) for m in (model, sag)]
    term_with, term_without = with_app[1] - with_app[0], without[1] - without[0]
    assert term_with.abs().max() > 1e-3
    assert (with_app[0] - without[0]).abs().max() > 1e-3  # the appearance itself matters
    torch.testing.assert_close(term_with, term_without, rtol=1e-4, atol=1e-5)


def test_self_attention_guidance_with_several_windows_is_refused_up_front(tiny_models):
    from comfy_extras.nodes_sag import SelfAttentionGuidance

    sag = SelfAttentionGuidance.execute(tiny_models[0].model, 0.8, 2.0).result[0]
    with pytest.raises(Exception, match=r"TemporalSample: Self-Attention Guidance.*3 windows") as error:
        temporal_sample(tiny_models, 17, model=sag)  # padded to 32 frames: 3 windows
    assert type(error.value).__name__ == "MagicAnimateError"  # the pack's own class (loaded under another name)


# --- nothing silently replaced: schedule patches, core context windows, core samplers ------------------------------

class FakeServer:
    """Stands for PromptServer.instance: collects the text shown on nodes."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def send_progress_text(self, text, node_id, sid=None) -> None:
        # The random hint frames here are not viridis DensePose: Pose Control's own colour-map warning (tested in
        # tests/nodes/test_node_help_and_ui_warning.py) is not what these tests look at.
        if not text.startswith("PoseControl warning:"):
            self.texts.append((str(node_id), text))


@pytest.fixture
def ui(monkeypatch):
    import server
    from comfy_execution.utils import CurrentNodeContext

    fake = FakeServer()
    monkeypatch.setattr(server.PromptServer, "instance", fake, raising=False)
    with CurrentNodeContext("prompt", "42"):
        yield fake


def ksampler(model, frames: int = 2):
    import nodes as comfy_nodes

    latent = {"samples": torch.zeros(frames, 4, SIZE // 8, SIZE // 8)}
    return comfy_nodes.common_ksampler(model, 1, 1, 1.0, "euler", "normal", text(0.5), text(), latent)[0]["samples"]


def test_model_sampling_discrete_after_the_loader_warns_in_the_ui(tiny_models, ui):
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete

    model = tiny_models[0].model
    temporal_sample(tiny_models, 2, model=model)
    assert ui.texts == []  # the MagicAnimate schedule as loaded: no word
    temporal_sample(tiny_models, 2, model=ModelSamplingDiscrete().patch(model, "eps", False)[0])
    assert len(ui.texts) == 1
    node, message = ui.texts[0]
    assert node == "42" and "ModelSamplingDiscrete" in message and "25.15 -> 14.61" in message


def test_core_context_window_node_is_refused_by_temporal_sample_and_core_samplers(tiny_models):
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode

    # Every input at the node's own default (newer ComfyUI versions add inputs), the windows as the reference's.
    inputs = {i.id: getattr(i, "default", None) for i in ContextWindowsManualNode.define_schema().inputs}
    inputs.update(model=tiny_models[0].model, context_length=16, context_overlap=4, context_schedule="standard_static",
                  context_stride=1, closed_loop=False, fuse_method="pyramid", dim=0)
    model = ContextWindowsManualNode.execute(**inputs).result[0]
    with pytest.raises(Exception, match="TemporalSample: a core context-window node.*Segment Fuse") as error:
        temporal_sample(tiny_models, 2, model=model)
    assert type(error.value).__name__ == "MagicAnimateError"
    with pytest.raises(Exception, match="KSampler: a core context-window node") as error:
        ksampler(model, 20)
    assert type(error.value).__name__ == "MagicAnimateError"  # not core's size-mismatch error


def test_core_ksampler_on_the_magicanimate_model_warns_in_the_ui(tiny_models, ui):
    out = ksampler(tiny_models[0].model)
    assert out.shape == (2, 4, SIZE // 8, SIZE // 8) and torch.isfinite(out).all()
    assert len(ui.texts) == 1 and "without the appearance and the pose" in ui.texts[0][1]


# --- patches that compose as they are: FreeU_V2, ToMe, SD1.5 LoRA -----------------------------------------------

def test_freeu_v2_and_tome_change_the_video(tiny_models):
    from comfy_extras.nodes_freelunch import FreeU_V2
    from comfy_extras.nodes_tomesd import TomePatchModel

    model = tiny_models[0].model
    # 128 pixels: FreeU normalises by a max-min over space, NaN on the 1x1 deepest level of a smaller latent.
    plain = sample_without_node(tiny_models, 1, model, True)
    for patched in (FreeU_V2().patch(model, 1.3, 1.4, 0.9, 0.2)[0], TomePatchModel.execute(model, 0.5).result[0]):
        out = sample_without_node(tiny_models, 1, patched, True)
        assert torch.isfinite(out).all() and (out - plain).abs().max() > 1e-3


def test_sd15_lora_loads_onto_the_magicanimate_model(tiny_models):
    import comfy.sd

    model = tiny_models[0].model
    g = torch.Generator().manual_seed(3)
    lora = {}
    for block in ("down_blocks_0_attentions_0", "up_blocks_3_attentions_2"):
        name = f"lora_unet_{block}_transformer_blocks_0_attn1_to_q"
        lora[f"{name}.lora_up.weight"] = torch.randn(32, 4, generator=g)
        lora[f"{name}.lora_down.weight"] = torch.randn(4, 32, generator=g)
    patched, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)
    assert len(patched.patches) == 2
    plain = temporal_sample(tiny_models, 2, model=model)
    assert (temporal_sample(tiny_models, 2, model=patched) - plain).abs().max() > 1e-3
