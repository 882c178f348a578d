"""SN-Net (Pan et al., CVPR 2023) on the same data and budget as the pool: the anchors are
a narrow model of the ancestor's depth trained from scratch and the ancestor itself;
stitches between them start from least squares and everything trains jointly, one
sampled stitch per step, exactly as `assemble --all` trains a pool.

`PoolModel` already is "two equal-depth timm ViTs + one Linear per (j, k) pair", so SN-Net
is a PoolModel over the anchors: same stitching configurations (paired, kernel 2), same
init, same LightningModule, same budget. What differs is what is stitched: a pool's
distilled half-depth models against SN-Net's full-depth anchors.
"""

from __future__ import annotations

import copy
import time

import torch.nn as nn

from learngene.baselines.zoo import Zoo
from learngene.training import OptimConfig, TrainerArgs
from learngene.vit import ViTView

# the narrow anchor trains from scratch with the embedded ancestor's own recipe
ANCHOR_OPTIM = OptimConfig(lr=1e-3, weight_decay=0.05, warmup_fraction=0.1, label_smoothing=0.1)
ANCHOR_EPOCHS = 30


def model_args(model: nn.Module) -> dict:
    s = ViTView(model).shape
    return dict(img_size=s.img_size, patch_size=s.patch_size, embed_dim=s.embed_dim, depth=s.depth,
                num_heads=s.num_heads, mlp_ratio=s.mlp_hidden / s.embed_dim, num_classes=s.num_classes)


def train_anchor(ancestor: nn.Module, dm, embed_dim: int = 48, num_heads: int = 3, epochs: int = ANCHOR_EPOCHS,
                 seed: int = 0, arch: str = "deit_tiny_patch16_224", trainer_args: TrainerArgs | None = None):
    """A narrow ViT of the ancestor's depth from random init, cross-entropy only."""
    import lightning as L
    import timm

    from learngene.training import Classifier, make_trainer

    args = dict(model_args(ancestor), embed_dim=embed_dim, num_heads=num_heads)
    L.seed_everything(seed, verbose=False)
    model = timm.create_model(arch, **args)
    targs = copy.copy(trainer_args or TrainerArgs(progress=False))
    targs.max_epochs = epochs
    make_trainer(targs, limit_val_batches=0).fit(Classifier(model, ANCHOR_OPTIM), datamodule=dm)
    return model.cpu().eval(), args


def snnet(ancestor: nn.Module, dm, spec=None, embed_dim: int = 48, num_heads: int = 3, anchor_epochs: int = ANCHOR_EPOCHS,
          seed: int = 0, anchor: tuple | None = None, trainer_args: TrainerArgs | None = None, log=None) -> Zoo:
    """Train the narrow anchor (or take ``anchor``: what `train_anchor` returned), stitch it
    to a copy of the ancestor, train all stitches jointly with assemble's recipe (``spec``:
    an AssembleSpec, default budget). The anchor itself is not changed."""
    from learngene.assemble.api import evaluate_specs, init_images, static_rows
    from learngene.assemble.model import PoolModel, count_params
    from learngene.assemble.stitch_init import init_lstsq
    from learngene.assemble.train import AssembleSpec, train_descendants

    spec = copy.deepcopy(spec) if spec is not None else AssembleSpec(seed=seed)
    seconds = {}
    if anchor is None:
        t0 = time.perf_counter()
        anchor = train_anchor(ancestor, dm, embed_dim, num_heads, anchor_epochs, seed, trainer_args=trainer_args)
        seconds["anchor"] = time.perf_counter() - t0
        if log:
            log(f"snnet seed {seed}: narrow anchor trained in {seconds['anchor']:.0f} s")
    t0 = time.perf_counter()
    anchor, anchor_args = anchor
    # copies, trainable: the caller's ancestor may be frozen (a teacher elsewhere) and stays as it is
    pm = PoolModel(copy.deepcopy(anchor), copy.deepcopy(ancestor), anchor_args, model_args(ancestor)).requires_grad_(True)
    init_lstsq(pm, init_images(dm))
    # params and FLOPs per member, as assemble counts them (the FLOPs also feed --sampling flops)
    rows = [{k: r[k] for k in ("id", "kind", "params", "flops")} for r in static_rows(pm, anchor_args["img_size"])]
    trained = train_descendants(pm, pm.specs, spec, dm, teacher=copy.deepcopy(ancestor),
                                flops={r["id"]: r["flops"] for r in rows},
                                trainer_args=trainer_args or TrainerArgs(progress=False))
    seconds["stitch + joint training"] = time.perf_counter() - t0
    val = evaluate_specs(pm, pm.specs, dm.val_dataloader())
    test = evaluate_specs(pm, pm.specs, dm.test_dataloader())
    for r in rows:
        r.update(val_top1=val[r["id"]]["top1"], test_top1=test[r["id"]]["top1"], test_top5=test[r["id"]]["top5"])
    models = {s.id: pm.descendant(s) for s in pm.specs}
    if log:
        log(f"snnet seed {seed}: {len(rows)} members, mean test top1 {sum(r['test_top1'] for r in rows) / len(rows):.2f}")
    return Zoo("snnet", models, rows, seconds, stored_params=count_params(pm), steps=trained["steps"])
