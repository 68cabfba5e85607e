import torch

from magicanimate.noise import tile_clip, video_noise


def test_tiled_noise_repeats_every_16_frames_and_matches_reference_layout():
    n = video_noise(3, 40, 4, 8, 8, mode="tiled")
    assert n.shape == (40, 4, 8, 8)
    assert torch.equal(n[0], n[16]) and torch.equal(n[5], n[37]) and not torch.equal(n[0], n[1])
    gen = torch.Generator().manual_seed(3)
    ref = torch.randn((1, 4, 16, 8, 8), generator=gen)  # the reference draws (1, C, 16, h, w)
    assert torch.equal(n[:16], ref[0].permute(1, 0, 2, 3))


def test_independent_noise_differs_per_frame_and_seed_changes_it():
    n = video_noise(3, 20, 4, 8, 8, mode="independent")
    assert not torch.equal(n[0], n[16])
    assert not torch.equal(video_noise(4, 20, 4, 8, 8), video_noise(3, 20, 4, 8, 8))
    assert tile_clip(torch.arange(3.0).view(3, 1, 1, 1), 7).flatten().tolist() == [0, 1, 2, 0, 1, 2, 0]
