"""The ancestor structurally pruned to a narrower width with Torch-Pruning (`torch-pruning`):
group L2 magnitude over the embedding, every head's dimensions and the MLP hidden together,
the head's classes kept. What an auxiliary model with ``init: pruned`` starts from, and the
start of the `prune` per-size baseline (learngene.baselines.one_per_size)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from learngene.core.errors import UserError
from learngene.core.vit import ViTView


def pruned(ancestor: nn.Module, width: int) -> nn.Module:
    """The ancestor pruned to ``width``, as a plain timm model of the ancestor's shape at that
    width (every block keeps its heads; each head, the embedding and the MLP shrink by the same
    ratio, so the result is a standard DeiT of that width)."""
    import timm

    try:
        import torch_pruning as tp
    except ImportError:
        raise UserError("pruning the ancestor needs torch-pruning: pip install 'learngene[baselines]'") from None
    from learngene.pool.distill import STUDENT_ARCH

    s = ViTView(ancestor).shape
    if width % s.num_heads or not 0 < width <= s.embed_dim:
        raise UserError(
            f"the ancestor (width {s.embed_dim}, {s.num_heads} heads) prunes to a width that is a multiple "
            f"of its heads and at most its own, got {width}"
        )
    # Torch-Pruning traces the autograd graph: a frozen teacher's copy (distillation freezes the
    # ancestor it is given) would trace to nothing and come back unpruned
    model = copy.deepcopy(ancestor).cpu().eval().requires_grad_(True)
    heads = {blk.attn.qkv: blk.attn.num_heads for blk in model.blocks}
    example = torch.zeros(1, 3, s.img_size, s.img_size)
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=1 - width / s.embed_dim,
        ignored_layers=[model.head],
        # the class token and positions are cut along their embedding (last) dimension
        unwrapped_parameters=[(model.cls_token, -1), (model.pos_embed, -1)],
        num_heads=heads,
        prune_head_dims=True,
        prune_num_heads=False,
        global_pruning=False,
    )
    pruner.step()
    out = timm.create_model(STUDENT_ARCH, **{**ViTView(ancestor).model_args(), "embed_dim": width})
    out.load_state_dict(model.state_dict())  # same shapes, or the pruning did not give a plain DeiT
    return out
