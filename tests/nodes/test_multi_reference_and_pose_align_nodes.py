"""AppearanceEncode with 1 to 4 reference photos, and the Pose Align node, executed directly (no server)."""

from __future__ import annotations

import sys

import pytest
import torch

from devtools.pack import PACK_NAME, pack_nodes
from magicanimate.densepose import viridis_curve

BG = torch.tensor([65, 0, 81]) / 255


class PoolVAE:
    """Stands in for a VAE: ``(B, H, W, 3)`` -> ``(B, 4, H/8, W/8)``, each image encoded on its own."""

    def encode(self, pixels):
        x = torch.nn.functional.avg_pool2d(pixels.movedim(-1, 1), 8)
        return torch.cat([x, x.mean(dim=1, keepdim=True)], dim=1)


def magicanimate_error() -> type:
    pack_nodes()
    return sys.modules[f"{PACK_NAME}.magicanimate.errors"].MagicAnimateError


def encode(image, **kw):
    return pack_nodes()["MagicAnimateAppearanceEncode"].execute("encoder", PoolVAE(), image, width=64, height=64,
                                                                **kw).result[0]


def test_appearance_encode_keeps_every_reference_photo_up_to_four():
    photos = torch.rand(4, 48, 40, 3, generator=torch.Generator().manual_seed(0))
    one = encode(photos[:1])
    assert one.latent.shape == (1, 4, 8, 8)
    for k in (2, 4):
        many = encode(photos[:k])
        assert many.latent.shape == (k, 4, 8, 8)
        for i in range(k):
            assert torch.equal(many.latent[i:i + 1], encode(photos[i:i + 1]).latent)
    with pytest.raises(magicanimate_error(), match="holds 5 images; it takes 1 to 4"):
        encode(torch.rand(5, 16, 16, 3))


def densepose_video(frames, size=64, top=8, left=40, height=20):
    video = BG.view(1, 1, 1, 3).repeat(frames, size, size, 1)
    for t in range(frames):
        video[t, top + t:top + t + height, left:left + 8] = viridis_curve()[100 + 20 * t]
    return video


def test_pose_align_node_keeps_frames_and_size_and_moves_the_body():
    align = pack_nodes()["MagicAnimatePoseAlign"]
    video = densepose_video(5)
    reference = densepose_video(1, top=30, left=10, height=30)
    rgba = torch.cat([video, torch.ones(5, 64, 64, 1)], dim=-1)
    out = align.execute(rgba, reference, mode="median").result[0]
    assert out.shape == (5, 64, 64, 3)
    rows = (out[2] != BG).any(dim=-1).any(dim=1).nonzero().flatten()
    assert abs(int(rows[-1]) + 1 - int(rows[0]) - 30) <= 1   # the reference's body height


@pytest.mark.parametrize("frames,reference,mode,message", [
    (torch.zeros(0, 64, 64, 3), None, "first-frame", "PoseAlign: pose_frames is empty"),
    (None, torch.zeros(1, 64, 64, 2), "first-frame", "PoseAlign: reference_pose has shape"),
    (None, "two", "first-frame", "PoseAlign: reference_pose holds 2 images"),
    (None, BG.view(1, 1, 1, 3).repeat(1, 64, 64, 1), "median", "PoseAlign: reference_pose holds no body"),
    (BG.view(1, 1, 1, 3).repeat(3, 64, 64, 1), None, "median", "PoseAlign: no frame of pose_frames holds a body"),
    (None, None, "mean", "MagicAnimate Pose Align: mode 'mean' is not one of its options"),
])
def test_pose_align_node_refuses_bad_inputs_naming_them(frames, reference, mode, message):
    align = pack_nodes()["MagicAnimatePoseAlign"]
    frames = densepose_video(3) if frames is None else frames
    if reference is None:
        reference = densepose_video(1)
    elif isinstance(reference, str):
        reference = densepose_video(2)
    with pytest.raises(magicanimate_error(), match=message):
        align.execute(frames, reference, mode=mode)


def test_pose_align_mode_is_checked_at_queue_time():
    align = pack_nodes()["MagicAnimatePoseAlign"]
    assert align.validate_inputs(mode="first-frame") is True
    message = align.validate_inputs(mode="../../etc/passwd")
    assert isinstance(message, str) and message.startswith("MagicAnimate Pose Align: mode")
