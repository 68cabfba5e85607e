"""MagicAnimate Save Video: the mp4 it writes (frames, size, rate, sound, tags), what it shows and returns, and that an
interrupt, an error or a user mistake leaves no file behind."""

from __future__ import annotations

import json
import sys
import types
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from video_probe import probe

from devtools.pack import PACK_NAME, pack_nodes
from magicanimate.video_writer import AudioTrack, VideoWriter

NODE_ID = "MagicAnimateSaveVideo"


class StandInVAE:
    """``decode`` ``(n, 4, h, w)`` -> IMAGE ``(n, 8h, 8w, 3)`` in 0..1 (cheap, deterministic); counts the calls."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls, self.fail_at = 0, fail_at

    def spacial_compression_decode(self) -> int:
        return 8

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_at == self.calls:
            raise RuntimeError("out of memory (stand-in)")
        up = latent[:, :3].repeat_interleave(8, -1).repeat_interleave(8, -2)
        return torch.sigmoid(up).movedim(1, -1).contiguous()


@pytest.fixture
def output_dir(tmp_path, monkeypatch) -> Path:
    import folder_paths

    out = tmp_path / "output"
    out.mkdir()
    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(out))
    return out


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def save(frames: int = 10, size: tuple[int, int] = (4, 6), vae=None, **kwargs):
    latent = torch.randn(frames, 4, *size, generator=torch.Generator().manual_seed(frames))
    kwargs.setdefault("chunk_frames", 4)
    return pack_nodes()[NODE_ID].execute({"samples": latent}, vae or StandInVAE(), **kwargs)


def _ui(out) -> dict:
    return out.ui.as_dict() if hasattr(out.ui, "as_dict") else out.ui


def test_writes_an_mp4_with_the_frames_size_and_rate_shows_it_and_returns_a_video(output_dir, monkeypatch):
    node = pack_nodes()[NODE_ID]
    monkeypatch.setattr(node, "hidden", types.SimpleNamespace(prompt={"3": {"class_type": NODE_ID}},
                                                              extra_pnginfo={"workflow": {"nodes": []}}), raising=False)
    vae = StandInVAE()
    out = save(10, vae=vae, fps=12.0, filename_prefix="MagicAnimate/clip")
    assert vae.calls == 3  # chunks of 4, 4, 2
    assert files_in(output_dir) == ["MagicAnimate/clip_00001_.mp4"]
    info = probe(output_dir / "MagicAnimate/clip_00001_.mp4")
    assert info["frames"] == 10 and info["size"] == (48, 32) and info["rate"] == 12 and info["audio_s"] is None
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert json.loads(info["tags"]["prompt"]) == {"3": {"class_type": NODE_ID}}
    assert json.loads(info["tags"]["workflow"]) == {"nodes": []}
    assert _ui(out) == {"images": [{"filename": "clip_00001_.mp4", "subfolder": "MagicAnimate", "type": "output"}],
                        "animated": (True,)}
    video = out.result[0]
    assert video.get_dimensions() == (48, 32) and video.get_frame_count() == 10 and video.get_frame_rate() == 12
    save(3, fps=12.0, filename_prefix="MagicAnimate/clip")  # the next run gets the next number
    assert files_in(output_dir) == ["MagicAnimate/clip_00001_.mp4", "MagicAnimate/clip_00002_.mp4"]


def test_no_metadata_with_disable_metadata(output_dir, monkeypatch):
    from comfy.cli_args import args

    node = pack_nodes()[NODE_ID]
    monkeypatch.setattr(node, "hidden", types.SimpleNamespace(prompt={"1": {}}, extra_pnginfo=None), raising=False)
    monkeypatch.setattr(args, "disable_metadata", True)
    save(2, filename_prefix="m")
    assert "prompt" not in probe(output_dir / "m_00001_.mp4")["tags"]


def _tone(seconds: float, rate: int = 16000, channels: int = 2) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return torch.stack([0.3 * torch.sin(2 * torch.pi * 330 * (c + 1) * t) for c in range(channels)])[None]


def test_audio_is_muxed_and_cut_to_the_video(output_dir):
    save(10, fps=10.0, filename_prefix="a", audio={"waveform": _tone(4.0), "sample_rate": 16000})
    info = probe(output_dir / "a_00001_.mp4")
    assert info["frames"] == 10 and info["audio_channels"] == 2
    assert info["audio_s"] == pytest.approx(1.0, abs=0.07)  # 4 s of sound cut to the 1 s of video


def _driving_video(path: Path, fps: int, seconds: float) -> Path:
    frames = int(fps * seconds)
    with VideoWriter(path, 32, 32, fps, audio=AudioTrack(_tone(seconds, channels=1)[0].numpy(), 16000)) as writer:
        writer.write(np.zeros((frames, 32, 32, 3), np.uint8))
        writer.finish()
    return path


def test_a_connected_video_gives_its_frame_rate_and_audio_unless_audio_is_connected(output_dir, tmp_path):
    from comfy_api.latest import InputImpl, Types

    driving = InputImpl.VideoFromFile(str(_driving_video(tmp_path / "driving.mp4", 20, 2.0)))
    save(10, fps=7.0, filename_prefix="v", video=driving)
    info = probe(output_dir / "v_00001_.mp4")
    assert info["rate"] == 20 and info["frames"] == 10  # the video's rate, not fps
    assert info["audio_channels"] == 1 and info["audio_s"] == pytest.approx(0.5, abs=0.07)

    save(10, filename_prefix="w", video=driving, audio={"waveform": _tone(2.0), "sample_rate": 16000})
    info = probe(output_dir / "w_00001_.mp4")
    assert info["rate"] == 20 and info["audio_channels"] == 2  # the audio input wins over the video's sound

    in_memory = InputImpl.VideoFromComponents(Types.VideoComponents(
        images=torch.zeros(4, 32, 32, 3), audio={"waveform": _tone(1.0), "sample_rate": 16000},
        frame_rate=Fraction(8)))
    save(4, filename_prefix="x", video=in_memory)
    info = probe(output_dir / "x_00001_.mp4")
    assert info["rate"] == 8 and info["audio_channels"] == 2 and info["audio_s"] == pytest.approx(0.5, abs=0.07)


def test_an_interrupt_after_the_first_chunk_leaves_no_file(output_dir, monkeypatch):
    import comfy.model_management

    checks, during = [], []

    def interrupt_after_first_chunk() -> None:
        checks.append(1)
        if len(checks) > 1:
            during.extend(files_in(output_dir))
            raise comfy.model_management.InterruptProcessingException()

    monkeypatch.setattr(comfy.model_management, "throw_exception_if_processing_interrupted",
                        interrupt_after_first_chunk)
    vae = StandInVAE()
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        save(200, size=(2, 2), vae=vae, chunk_frames=60, filename_prefix="MagicAnimate/video")
    assert vae.calls == 1
    # while running, only a hidden temporary file was there (x264 had written packets), never the final name
    assert len(during) == 1 and Path(during[0]).name.startswith(".") and "video_00001_.mp4" not in during[0]
    assert files_in(output_dir) == []


def test_an_error_in_a_later_chunk_leaves_no_file(output_dir):
    with pytest.raises(RuntimeError, match="stand-in"):
        save(200, size=(2, 2), vae=StandInVAE(fail_at=3), chunk_frames=60, filename_prefix="e")
    assert files_in(output_dir) == []


@pytest.mark.parametrize(("samples", "kwargs", "words"), [
    ({"samples": torch.zeros(0, 4, 4, 4)}, {}, ["samples", "empty"]),
    ({"samples": torch.zeros(2, 4, 4)}, {}, ["samples", "shape"]),
    ({"samples": torch.zeros(1, 2, 4, 4, 4)}, {}, ["samples", "shape"]),
    ("not a latent", {}, ["samples", "LATENT"]),
    ({"samples": torch.zeros(2, 4, 4, 4)}, {"fps": 0.0}, ["fps", "positive"]),
    ({"samples": torch.zeros(2, 4, 4, 4)}, {"fps": -5.0}, ["fps"]),
    ({"samples": torch.zeros(2, 4, 4, 4)}, {"fps": float("nan")}, ["fps"]),
    ({"samples": torch.zeros(2, 4, 4, 4)}, {"chunk_frames": 0}, ["chunk_frames"]),
])
def test_user_mistakes_are_named_errors_and_leave_no_file(output_dir, samples, kwargs, words):
    node = pack_nodes()[NODE_ID]
    with pytest.raises(sys.modules[f"{PACK_NAME}.magicanimate.errors"].MagicAnimateError) as caught:
        node.execute(samples, StandInVAE(), **kwargs)
    message = str(caught.value)
    assert message.startswith(node.define_schema().display_name + ":") and all(w in message for w in words), message
    assert files_in(output_dir) == []


def test_queue_time_check_refuses_bad_widgets():
    node = pack_nodes()[NODE_ID]
    assert node.validate_inputs(fps=25.0, chunk_frames=16) is True
    assert "fps" in node.validate_inputs(fps=0.0, chunk_frames=16)
    assert "chunk_frames" in node.validate_inputs(fps=25.0, chunk_frames=0)
