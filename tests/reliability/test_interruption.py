"""Interruption in every phase of a MagicAnimate run, in-process, on models that share one SD1.5 UNet.

The temporal MODEL here is built the way the loader's optional ``model`` input builds it: a motion-module-only file on
top of a plain SD1.5 ModelPatcher (standing in for CheckpointLoaderSimple's MODEL); the temporal MODEL's module tree
is its own but shares the plain model's weight storage. After an interruption
(raised from inside a phase, or the interrupt flag set during it as POST /interrupt does):

- no per-run state is left (reference bank, projected keys/values, ControlNet residual cache, hints, frame count);
- a plain KSampler run on the SD1.5 MODEL is bit-identical to the one made before MagicAnimate ever ran, and leaves no
  MagicAnimate override or model_sampling patch on the shared UNet;
- the next MagicAnimate run with the same model objects is bit-identical to the first one.
"""

from __future__ import annotations

import gc
import sys

import comfy.model_management
import comfy.utils
import pytest
import torch
from comfy.patcher_extension import WrappersMP
from tiny_models import text_cond, viridis_frames

from devtools.pack import PACK_NAME, load_pack, pack_nodes


def _mod(name: str):
    load_pack()
    return sys.modules[f"{PACK_NAME}.{name}"]


class Models:
    def __init__(self, files, vae):
        loaders = _mod("magicanimate.comfy_adapter.loaders")
        from tiny_models import TINY32

        from devtools.random_weights.model_files import make_unet3d_state_dict

        spatial = {k: v for k, v in make_unet3d_state_dict(TINY32, seed=0).items() if ".motion_modules." not in k}
        self.base, missing, _ = loaders.build_unet(spatial, "sd15.safetensors", "an SD1.5 UNet", torch.float32)
        assert not missing
        self.temporal = loaders.load_temporal_model(str(files.motion_only), base_model=self.base).model
        # Two module trees (the motion modules stay out of the plain MODEL), one weight storage.
        assert self.temporal.model is not self.base.model
        weight = "diffusion_model.middle_block.1.proj_in.weight"
        assert self.temporal.model.state_dict()[weight].data_ptr() == self.base.model.state_dict()[weight].data_ptr()
        self.encoder = loaders.load_appearance_encoder(str(files.appearance), torch.float32)
        self.control = loaders.load_densepose_controlnet(str(files.controlnet), torch.float32)
        self.vae = vae
        self.nodes = pack_nodes()
        self.original_sampling = self.base.model.model_sampling
        self.image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(11))
        self.frames = viridis_frames(12)

    def plain_ksampler(self) -> torch.Tensor:
        """What core KSampler does (nodes.common_ksampler) on the plain SD1.5 MODEL."""
        import nodes as comfy_nodes

        latent = {"samples": torch.zeros(1, 4, 8, 8)}
        out = comfy_nodes.common_ksampler(self.base, 3, 2, 4.0, "euler", "normal", text_cond(32, 0.1),
                                          text_cond(32, -0.1), latent)
        return out[0]["samples"]

    def animate(self) -> torch.Tensor:
        """AppearanceEncode -> PoseControl -> TemporalSample -> core VAEDecode, as a workflow runs them."""
        import nodes as comfy_nodes

        n = self.nodes
        appearance = n["MagicAnimateAppearanceEncode"].execute(self.encoder, self.vae, self.image, width=64,
                                                               height=64).result[0]
        pose = n["MagicAnimatePoseControl"].execute(self.control, self.frames).result[0]
        latent = n["MagicAnimateTemporalSample"].execute(self.temporal, appearance, pose, text_cond(32, 0.1),
                                                         text_cond(32, -0.1), seed=1, steps=2, cfg=7.5).result[0]
        return comfy_nodes.VAEDecode().decode(self.vae, latent)[0]

    def frames_state(self):
        wrapper = self.temporal.wrappers[WrappersMP.DIFFUSION_MODEL]["magicanimate_frames"][0]
        return next(c.cell_contents for c in wrapper.__closure__ if type(c.cell_contents).__name__ == "TemporalState")

    def overridden_modules(self) -> list[str]:
        dm = self.base.model.diffusion_model
        return [name for name, m in dm.named_modules() if "forward" in m.__dict__]


@pytest.fixture(scope="module")
def shared(tiny_files, random_vae):
    models = Models(tiny_files, random_vae)
    models.plain_fresh = models.plain_ksampler()   # before MagicAnimate ever touched the UNet
    models.animated = models.animate()
    assert models.animated.shape == (12, 64, 64, 3) and torch.isfinite(models.animated).all()
    return models


def _phase_module(models: Models, phase: str) -> torch.nn.Module:
    return {
        "AppearanceEncode (VAE encode)": lambda: models.vae.first_stage_model.encoder,
        # ComfyUI calls the layers of a TimestepEmbedSequential one by one: hook a layer, not the block.
        "appearance encoder (reference UNet)": lambda: models.encoder.patcher.model.diffusion_model.middle_block[1],
        "sampling (temporal UNet)": lambda: models.temporal.model.diffusion_model.middle_block[1],
        "DensePose ControlNet": lambda: models.control.control_model.middle_block[0],
        "decode (VAE decode)": lambda: models.vae.first_stage_model.decoder,
    }[phase]()


PHASES = [("AppearanceEncode (VAE encode)", "raise"), ("appearance encoder (reference UNet)", "raise"),
          ("sampling (temporal UNet)", "raise"), ("DensePose ControlNet", "raise"), ("decode (VAE decode)", "raise"),
          ("appearance encoder (reference UNet)", "flag"), ("sampling (temporal UNet)", "flag"),
          ("DensePose ControlNet", "flag")]


@pytest.mark.parametrize(("phase", "mode"), PHASES, ids=[f"{p}-{m}" for p, m in PHASES])
def test_interrupt_leaves_no_state_and_the_next_runs_are_bit_identical(shared, phase, mode):
    models = shared
    animate = _mod("magicanimate.comfy_adapter.animate")
    calls = {"n": 0}
    # Sampling: the second UNet call (step 2), so the first step's caches exist when it stops.
    fire_on = 2 if phase == "sampling (temporal UNet)" else 1

    def hook(module, args, output):
        calls["n"] += 1
        if calls["n"] == fire_on:
            comfy.model_management.interrupt_current_processing(True)
            if mode == "raise":
                comfy.model_management.throw_exception_if_processing_interrupted()

    def server_progress_hook(value, total, preview, node_id=None):  # what main.py's hook does first
        comfy.model_management.throw_exception_if_processing_interrupted()

    handle = _phase_module(models, phase).register_forward_hook(hook)
    comfy.utils.set_progress_bar_global_hook(server_progress_hook)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException), animate.recorded_runs() as runs:
            models.animate()
    finally:
        handle.remove()
        comfy.utils.set_progress_bar_global_hook(None)
        comfy.model_management.interrupt_current_processing(False)
    states = [run.state for run in runs]
    assert calls["n"] >= fire_on
    if mode == "flag":  # honoured within the step it was requested in (a window later at most)
        done = sum(s.stats["windows"] for s in states), sum(s.stats["encoder_runs"] for s in states)
        assert max(done) <= fire_on, done
    for state in states:   # per-run caches are dropped even though the run was cut short
        assert state.bank == {} and state.kv == {} and state.control_cache == {} and state.control_cache.uses == []
        assert state.hints is None and state.cond_context is None and state.step_sigma is None
    assert models.frames_state().frames is None
    states.clear()
    gc.collect()

    assert torch.equal(models.plain_ksampler(), models.plain_fresh)
    assert models.base.model.model_sampling is models.original_sampling
    assert models.overridden_modules() == []
    assert torch.equal(models.animate(), models.animated)
    assert torch.equal(models.plain_ksampler(), models.plain_fresh)
    assert models.overridden_modules() == [] and models.base.model.model_sampling is models.original_sampling
