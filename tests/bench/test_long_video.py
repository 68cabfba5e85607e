"""The measuring parts of ``bench.long_video``: each node's peak RAM (``bench.node_peaks``) and the narrow-decoder VAE
that makes long CPU runs affordable."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file

from bench import long_video, node_peaks

MIB = 2**20


def _touch(mib: int) -> bytearray:
    """``mib`` MiB made resident (every page written)."""
    block = bytearray(mib * MIB)
    block[::4096] = b"\1" * len(block[::4096])
    return block


def test_each_node_gets_the_peak_of_its_own_work(tmp_path, monkeypatch):
    """A node that briefly holds 200 MiB has that peak; the node after it, which holds nothing, does not inherit it
    (the high-water mark is reset between nodes), and the whole run's peak is the largest node's."""
    import devtools.run_graph as run_graph
    from scripts import animate

    prompt = {"1": {"class_type": "Big"}, "2": {"class_type": "Small"}}

    def fake_animate(argv):
        assert argv == ["--workflow", "x"]
        console = run_graph.ConsoleServer(prompt)
        console.tty = False
        console.send_sync("executing", {"node": "1"})
        block = _touch(200)
        del block
        console.send_sync("executing", {"node": "2"})
        console.send_sync("executing", {"node": None})
        return 0

    monkeypatch.setattr(animate, "main", fake_animate)
    out = tmp_path / "peaks.json"
    assert node_peaks.main([str(out), "--", "--workflow", "x"]) == 0
    result = json.loads(out.read_text())
    phases = {p["phase"]: p for p in result["phases"]}
    assert list(phases) == ["setup", "1", "2", "after"]
    assert phases["1"]["class_type"] == "Big" and phases["2"]["class_type"] == "Small"
    assert phases["1"]["peak_rss_mib"] - phases["2"]["peak_rss_mib"] > 150
    assert phases["2"]["peak_rss_mib"] - phases["setup"]["peak_rss_mib"] < 50
    assert result["peak_rss_mib"] == phases["1"]["peak_rss_mib"]


def test_narrow_vae_models_narrow_the_decoder_only_and_modify_no_file(tmp_path):
    """Decoder dimensions that are multiples of 128 scale by channels / 128 (latent and RGB ones stay), the encoder is
    untouched, the other model files are linked rather than copied, and the source VAE is left as it was."""
    models = tmp_path / "models"
    (models / "vae").mkdir(parents=True)
    (models / "magicanimate").mkdir()
    (models / "magicanimate" / "temporal_attention.ckpt").write_bytes(b"weights")
    source = {
        "decoder.conv_in.weight": torch.randn(512, 4, 3, 3),
        "decoder.mid.attn_1.q.weight": torch.randn(512, 512, 1, 1),
        "decoder.up.0.block.0.nin_shortcut.weight": torch.randn(128, 256, 1, 1),
        "decoder.conv_out.weight": torch.randn(3, 128, 3, 3),
        "decoder.conv_out.bias": torch.randn(3),
        "encoder.conv_in.weight": torch.randn(128, 3, 3, 3),
        "post_quant_conv.weight": torch.randn(4, 4, 1, 1),
    }
    vae_file = models / "vae" / long_video.SD_VAE_FILE
    save_file(source, vae_file)
    before = vae_file.read_bytes()

    narrow = long_video.narrow_vae_models(models, tmp_path / "narrow", 32)

    assert vae_file.read_bytes() == before
    linked = narrow / "magicanimate" / "temporal_attention.ckpt"
    assert linked.is_symlink() and linked.read_bytes() == b"weights"
    vae = load_file(narrow / "vae" / long_video.SD_VAE_FILE)
    shapes = {k: list(v.shape) for k, v in vae.items()}
    assert shapes == {
        "decoder.conv_in.weight": [128, 4, 3, 3],
        "decoder.mid.attn_1.q.weight": [128, 128, 1, 1],
        "decoder.up.0.block.0.nin_shortcut.weight": [32, 64, 1, 1],
        "decoder.conv_out.weight": [3, 32, 3, 3],
        "decoder.conv_out.bias": [3],
        "encoder.conv_in.weight": [128, 3, 3, 3],
        "post_quant_conv.weight": [4, 4, 1, 1],
    }
    assert torch.equal(vae["encoder.conv_in.weight"], source["encoder.conv_in.weight"])
    assert torch.equal(vae["decoder.conv_out.weight"], source["decoder.conv_out.weight"][:, :32])


def test_growth_per_frame_spans_the_shortest_and_the_longest_video():
    """The middle point does not enter; a node's value is reached through its key path; the padded count divides
    where asked."""
    points = {1000: {"peak": 300.0, "nodes": {"12": 50.0}, "padded": 1008},
              100: {"peak": 120.0, "nodes": {"12": 5.0}, "padded": 112},
              400: {"peak": 999.0, "nodes": {"12": 999.0}, "padded": 400}}
    assert long_video.per_frame(points, "peak") == 0.2
    assert long_video.per_frame(points, "nodes", "12") == 0.05
    assert long_video.per_frame(points, "peak", frames="padded") == 180 / 896
