"""Safe reading and sorting of temporal checkpoints (tiny random tensors in the real key layout)."""

import hashlib
import os
import pickle

import pytest
import torch

from devtools.proc_memory import peak_resident_bytes, reset_peak
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


# ---------------------------------------------------------------------------------------------------------------------
# Bounded loading, no bytes quoted, non-finite weights
# ---------------------------------------------------------------------------------------------------------------------

SECRET = "SECRET-7f3a9c-TOKEN"


def _compressed_zip_checkpoint(path, megabytes):
    """A torch zip checkpoint whose 'data/0' record is deflated: ``megabytes`` of zeros in a file of some 100 kB."""
    import io
    import zipfile

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(megabytes * 2**18)}, buf)
    buf.seek(0)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))


def _peak_rss_after(fn):
    """(result or exception, growth of the peak RSS in bytes) of ``fn()``; the peak is reset first (Linux)."""
    before = reset_peak()
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001 - returned for the caller to check
        out = exc
    return out, peak_resident_bytes() - before


def test_compressed_zip_record_is_refused_before_it_is_inflated(tmp_path):
    path = tmp_path / "bomb.ckpt"
    _compressed_zip_checkpoint(path, 256)
    size = path.stat().st_size
    assert size < 2**20
    err, growth = _peak_rss_after(lambda: read_state_dict(path))
    assert isinstance(err, CheckpointError) and "compressed records" in str(err) and "bomb.ckpt" in str(err), err
    assert growth < max(2 * size, 8 * 2**20), growth   # 256 MB if it had been inflated


def _mapped_file(address: int) -> str | None:
    """The file behind the memory mapping holding ``address`` (Linux ``/proc/self/maps``), None for anonymous memory."""
    with open("/proc/self/maps", encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= address < hi:
                return parts[5] if len(parts) > 5 else None
    return None


def test_zip_checkpoints_are_memory_mapped(tmp_path):
    path = tmp_path / "big.ckpt"
    torch.save({"w": torch.ones(64 * 2**18)}, path)   # 64 MB
    sd = read_state_dict(path)
    assert torch.equal(sd["w"][:4], torch.ones(4))
    # A view of the file, not a copy in RAM (torch 2.14 no longer reports a filename on mmapped storages).
    mapped = _mapped_file(sd["w"].data_ptr())
    assert mapped == str(path), f"the tensor lives in {mapped!r}, not in a mapping of the file"


@pytest.mark.parametrize("case, phrase", [
    ("length beyond file", "its header claims 1099511627776 bytes"),
    ("offsets beyond file", "does not fit in the file"),
    ("shape bigger than range", "does not fit in the file"),
    ("not json", "header is not valid JSON"),
    ("entry not a dict", "is malformed"),
    ("sizes overlap the file", "its tensors claim 48 bytes but the file holds 16"),
])
def test_safetensors_header_that_does_not_add_up_is_refused(tmp_path, case, phrase):
    import json
    import struct

    entry = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    header, data = {"w": entry}, b"\0" * 16
    if case == "offsets beyond file":
        header = {"w": {"dtype": "F32", "shape": [2**30], "data_offsets": [0, 2**32]}}
    elif case == "shape bigger than range":
        header = {"w": {"dtype": "F32", "shape": [2**20], "data_offsets": [0, 16]}}
    elif case == "entry not a dict":
        header = {"w": [SECRET]}
    elif case == "sizes overlap the file":
        header = {"a": entry, "b": dict(entry), "c": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    raw = json.dumps(header).encode()
    if case == "not json":
        raw = (SECRET + " {").encode()
    blob = struct.pack("<Q", len(raw) if case != "length beyond file" else 2**40) + raw + data
    path = tmp_path / "lying.safetensors"
    path.write_bytes(blob)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    assert "lying.safetensors" in str(info.value) and SECRET not in str(info.value)
    assert phrase in str(info.value), info.value   # refused by the header check, before safetensors allocates


def test_messages_never_quote_bytes_of_the_file(tmp_path, caplog):
    """Files that are secrets, not checkpoints: no message or log line shows their content."""
    files = {
        "secret.ckpt": f"c{SECRET}\n{SECRET}\n(tR.".encode(),                # a pickle GLOBAL naming the secret
        "secret_text.ckpt": f"password={SECRET}\n".encode(),
        "secret.pt": b"\x80\x02" + f"X\x13\x00\x00\x00{SECRET}.".encode(),   # a pickle of the secret string
        "secret.safetensors": b"\x40\x00\x00\x00\x00\x00\x00\x00" + f'{{"{SECRET}": 1}}'.encode().ljust(64),
    }
    caplog.set_level("DEBUG")
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as info:
            read_state_dict(path)
        assert SECRET not in str(info.value) and name in str(info.value), info.value
        assert SECRET not in repr(info.value.__cause__) and info.value.__cause__ is None
    assert SECRET not in caplog.text


@pytest.mark.parametrize("fmt", ["ckpt", "safetensors"])
def test_non_finite_weights_are_refused_naming_file_and_tensor(tmp_path, fmt):
    import safetensors.torch

    sd = {"conv_in.weight": torch.ones(4, 4), "down_blocks.0.norm.weight": torch.ones(8)}
    sd["down_blocks.0.norm.weight"][3] = float("nan") if fmt == "ckpt" else float("inf")
    path = tmp_path / f"nan_model.{fmt}"
    if fmt == "ckpt":
        torch.save(sd, path)
    else:
        safetensors.torch.save_file(sd, str(path))
    with pytest.raises(CheckpointError, match=r"nan_model\.\w+: tensor down_blocks\.0\.norm\.weight holds NaN or Inf"):
        read_state_dict(path)
