"""Safe reading and sorting of temporal checkpoints (tiny random tensors in the real key layout)."""

import hashlib
import os
import pickle

import pytest
import torch

from magicanimate.checkpoints import parse_temporal_checkpoint, read_state_dict, strip_prefixes
from magicanimate.errors import CheckpointError
from magicanimate.motion_module import MotionModuleSet, motion_module_keys


def motion_sd():
    torch.manual_seed(0)
    return {k: torch.randn_like(v) for k, v in MotionModuleSet((32, 64, 128, 128)).state_dict().items()}


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_560_keys_and_prefix_wrappers(tmp_path):
    assert len(motion_module_keys()) == 560 and len(set(motion_module_keys())) == 560
    sd = motion_sd()
    for prefix in ("", "module.", "unet."):
        path = tmp_path / f"m{prefix or 'plain'}.ckpt"
        torch.save({"state_dict": {prefix + k: v for k, v in sd.items()}, "global_step": 3}, path)
        before = digest(path)
        ck = parse_temporal_checkpoint(read_state_dict(path), str(path))
        assert ck.block_out_channels == (32, 64, 128, 128) and not ck.has_spatial
        assert all(torch.equal(ck.motion[k], sd[k]) for k in sd)
        assert digest(path) == before


def test_safetensors_and_fp16_round_trip(tmp_path):
    import safetensors.torch

    sd = {k: v.half() for k, v in motion_sd().items()}
    path = tmp_path / "m.safetensors"
    safetensors.torch.save_file(sd, path)
    back = read_state_dict(path)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/ma_pwned",))


def test_code_running_pickle_is_refused_without_running(tmp_path):
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as fh:
        pickle.dump({"x": Evil()}, fh)
    if os.path.exists("/tmp/ma_pwned"):
        os.remove("/tmp/ma_pwned")
    with pytest.raises(CheckpointError, match="arbitrary code"):
        read_state_dict(path)
    assert not os.path.exists("/tmp/ma_pwned")


def test_broken_and_wrong_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.safetensors is empty"):
        read_state_dict(empty)
    sd = motion_sd()
    full = tmp_path / "full.ckpt"
    torch.save(sd, full)
    trunc = tmp_path / "trunc.ckpt"
    trunc.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="trunc.ckpt"):
        read_state_dict(trunc)
    missing = dict(sd)
    missing.pop(next(iter(missing)))
    with pytest.raises(CheckpointError, match="lacks 1 of the 560"):
        parse_temporal_checkpoint(missing, "x/partial.ckpt")
    with pytest.raises(CheckpointError, match="LoRA"):
        parse_temporal_checkpoint({"lora_unet_down.weight": torch.zeros(1)}, "l.safetensors")
    with pytest.raises(CheckpointError, match="no motion-module keys"):
        parse_temporal_checkpoint({"conv_in.weight": torch.zeros(320, 4, 3, 3)}, "sd15_unet.safetensors")
    with pytest.raises(CheckpointError, match="LDM layout"):
        parse_temporal_checkpoint({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, "v1-5.ckpt")
    extra = dict(sd)
    extra["mid_block.motion_modules.0.temporal_transformer.norm.weight"] = torch.zeros(128)
    with pytest.raises(CheckpointError, match="AnimateDiff v2/v3"):
        parse_temporal_checkpoint(extra, "mm_sd_v15_v2.ckpt")


def test_strip_prefixes():
    assert list(strip_prefixes({"module.unet.a": torch.zeros(1)})) == ["a"]
