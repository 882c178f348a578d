import pytest
import torch
import torch.nn as nn

from learngene.core.errors import UserError
from learngene.core.vit import ViTView, fractional_positions


def test_taps_match_timm_forward(tiny_vit):
    view = ViTView(tiny_vit)
    x = torch.randn(3, 3, 16, 16)
    taps = view.forward_taps(x)
    with torch.no_grad():
        feats = tiny_vit.forward_features(x)
        logits = tiny_vit(x)
    torch.testing.assert_close(taps.logits, logits)
    # the last block's output, normed, is timm's forward_features
    torch.testing.assert_close(tiny_vit.norm(taps.blocks[-1]), feats)
    torch.testing.assert_close(taps.features, tiny_vit.forward_head(feats, pre_logits=True))
    assert len(taps.blocks) == len(taps.attn) == 4
    assert all(t.shape == (3, 17, 32) for t in taps.blocks + taps.attn)


def test_taps_match_timm_intermediates(tiny_vit):
    x = torch.randn(2, 3, 16, 16)
    taps = ViTView(tiny_vit).forward_taps(x)
    with torch.no_grad():
        inter = tiny_vit.forward_intermediates(x, output_fmt="NLC", intermediates_only=True, return_prefix_tokens=True)
    for i, (spatial, prefix) in enumerate(inter):
        torch.testing.assert_close(taps.blocks[i], torch.cat([prefix, spatial], dim=1))


def test_attention_tap_is_the_residual_branch(tiny_vit):
    view = ViTView(tiny_vit)
    x = torch.randn(2, 3, 16, 16)
    taps = view.forward_taps(x)
    blk = tiny_vit.blocks[1]
    with torch.no_grad():
        inp = taps.blocks[0]
        torch.testing.assert_close(taps.attn[1], blk.ls1(blk.attn(blk.norm1(inp))))
        # block output = input + attn branch + mlp branch
        mid = inp + taps.attn[1]
        torch.testing.assert_close(taps.blocks[1], mid + blk.ls2(blk.mlp(blk.norm2(mid))))


def test_pieces_compose_to_the_whole(tiny_vit):
    view = ViTView(tiny_vit)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        t = view.embed(x)
        t = view.run_blocks(t, 0, 2)
        t = view.run_blocks(t, 2)
        torch.testing.assert_close(view.head(t), tiny_vit(x))


def test_selected_taps_only_and_hooks_removed(tiny_vit):
    view = ViTView(tiny_vit)
    taps = view.forward_taps(torch.randn(1, 3, 16, 16), blocks=[-1], attn=[0])
    assert taps.blocks[:3] == [None] * 3 and taps.blocks[3] is not None
    assert taps.attn[0] is not None and taps.attn[1:] == [None] * 3
    assert all(not b._forward_hooks and not b.ls1._forward_hooks for b in tiny_vit.blocks)


def test_shape(tiny_vit):
    s = ViTView(tiny_vit).shape
    assert (s.embed_dim, s.depth, s.num_heads, s.mlp_hidden, s.img_size, s.patch_size, s.head_dim) == (
        32,
        4,
        2,
        128,
        16,
        4,
        16,
    )


def test_non_vit_refused():
    with pytest.raises(UserError, match="not a timm VisionTransformer"):
        ViTView(nn.Linear(2, 2))


def test_fractional_positions():
    assert fractional_positions(12) == [3, 7, 11]
    assert fractional_positions(6) == [1, 3, 5]
