"""Vanilla learngene (Wang et al., 2022): the last ``inherit`` blocks of the ancestor are
the learngene; a descendant puts new, randomly initialised narrow blocks under them (a
narrow embedding, ``n_lower`` blocks, a Linear up to the ancestor's width) and trains
with cross-entropy. One descendant per number of lower blocks, each trained on its own.

The model is a `StitchedViT` (narrow blocks -> Linear -> wide blocks), so it runs, counts
and exports exactly like a pool's stitched descendant. Inherited weights train at the
lower rate assemble uses for inherited weights, new ones at the rate for new stitches:
the recipe is the same, only where the weights come from differs.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from learngene.baselines.alone import train_alone
from learngene.core.training import OptimConfig, TrainerArgs, lr_groups
from learngene.core.vit import HEAD_KEYS, ViTView, block_prefix
from learngene.stitch.stitched import STITCHED_ARCH
from learngene.zoo import Zoo

LOWER = (1, 2, 3, 4, 5, 6)  # lower (narrow) blocks per descendant


def vanilla_args(
    ancestor: nn.Module, n_lower: int, narrow_dim: int = 48, narrow_heads: int = 3, inherit: int = 3
) -> dict:
    """timm model_args of a vanilla-learngene descendant (a stitched ViT)."""
    a = ViTView(ancestor).shape
    if not 1 <= inherit <= a.depth:
        raise ValueError(f"inherit must be 1..{a.depth}, got {inherit}")
    return dict(
        img_size=a.img_size,
        patch_size=a.patch_size,
        num_classes=a.num_classes,
        embed_dim=narrow_dim,
        depth=n_lower,
        num_heads=narrow_heads,
        mlp_ratio=a.mlp_hidden / a.embed_dim,
        back_embed_dim=a.embed_dim,
        back_depth=inherit,
        back_num_heads=a.num_heads,
    )


def vanilla_model(ancestor: nn.Module, n_lower: int, narrow_dim: int = 48, narrow_heads: int = 3, inherit: int = 3):
    import timm

    a = ViTView(ancestor).shape
    model = timm.create_model(STITCHED_ARCH, **vanilla_args(ancestor, n_lower, narrow_dim, narrow_heads, inherit))
    with torch.no_grad():
        for n, blk in enumerate(ancestor.blocks[a.depth - inherit :]):
            model.blocks[n_lower + 1 + n].load_state_dict(blk.state_dict())
        for name in ("norm", "fc_norm", "head"):
            getattr(model, name).load_state_dict(getattr(ancestor, name).state_dict())
    return model


def vanilla(
    ancestor: nn.Module,
    dm,
    steps_each: int,
    *,
    seed: int = 0,
    lower=LOWER,
    inherit: int = 3,
    narrow_dim: int = 48,
    narrow_heads: int = 3,
    lr: float = 1e-4,
    new_lr: float = 1e-3,
    weight_decay: float = 0.05,
    trainer_args: TrainerArgs | None = None,
    log=None,
) -> Zoo:
    import lightning as L

    models = {}
    for m in lower:
        L.seed_everything(seed, verbose=False)
        model = vanilla_model(ancestor, m, narrow_dim, narrow_heads, inherit)
        inherited = tuple(block_prefix(i) for i in range(m + 1, m + 1 + inherit)) + HEAD_KEYS
        groups = lr_groups(model, weight_decay, lambda name: lr if name.startswith(inherited) else new_lr)
        models[f"vanilla-{m}"] = (
            "vanilla",
            model,
            groups,
            STITCHED_ARCH,
            vanilla_args(ancestor, m, narrow_dim, narrow_heads, inherit),
        )
    optim = OptimConfig(lr=lr, weight_decay=weight_decay)
    return train_alone(models, dm, steps_each, seed, optim, "vanilla", trainer_args, log)
