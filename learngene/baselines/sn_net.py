"""SN-Net (Pan et al., CVPR 2023) on the same data and budget as the pool: the anchors are
a narrow model of the ancestor's depth (made one of the `learngene.core.registries.ANCHORS`
ways) and the ancestor itself;
stitches between them start from least squares and everything trains jointly, one
sampled stitch per step, exactly as `assemble --all` trains a pool.

`PoolModel` already is "two equal-depth timm ViTs + one Linear per (j, k) pair", so SN-Net
is a PoolModel over the anchors: same stitching configurations (paired, kernel 2), same
init, same LightningModule, same budget. What differs is what is stitched: a pool's
distilled half-depth models against SN-Net's full-depth anchors.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import lightning as L
import torch.nn as nn

from learngene.core.training import OptimConfig, TrainerArgs
from learngene.core.vit import ViTView
from learngene.stitch.init import init_images, init_lstsq
from learngene.stitch.joint import JointSpec, train_descendants
from learngene.stitch.stitched import PoolModel, count_params, evaluate_specs, static_rows
from learngene.zoo import Member, Zoo

# the narrow anchor trains from scratch with the embedded ancestor's own recipe
ANCHOR_OPTIM = OptimConfig(lr=1e-3, weight_decay=0.05, warmup_fraction=0.1, label_smoothing=0.1)
ANCHOR_EPOCHS = 30
# "until validation stops improving": the same recipe with its cosine schedule stretched
# over at most PLATEAU_MAX_EPOCHS, stopped PLATEAU_PATIENCE epochs after the best validation
# accuracy, whose state is kept
PLATEAU_MAX_EPOCHS, PLATEAU_PATIENCE = 200, 25

# How a narrow anchor is made (learngene.core.registries.ANCHORS): SN-Net's anchors are fully
# trained models, so a fair comparison gives it the best of what a user could do (plateau,
# distilled) beside the first setting (fixed).
ANCHOR_ABOUT = {
    "plateau": "from scratch until validation stops improving",
    "distilled": "distilled from the ancestor with the pool's narrow-auxiliary recipe and budget",
    "fixed": f"from scratch, the ancestor's {ANCHOR_EPOCHS}-epoch recipe",
}


def train_anchor(
    ancestor: nn.Module,
    dm,
    embed_dim: int = 48,
    num_heads: int = 3,
    epochs: int = ANCHOR_EPOCHS,
    seed: int = 0,
    arch: str = "deit_tiny_patch16_224",
    trainer_args: TrainerArgs | None = None,
    patience: int | None = None,
    depth: int | None = None,
):
    """A narrow ViT of the ancestor's depth (or ``depth``) from random init, cross-entropy only: ``epochs``
    epochs, or with ``patience``, at most ``epochs`` and stopped that many epochs after the
    best validation top1, whose state it returns. The third value: epochs run and best epoch."""
    import timm

    from learngene.core.convergence import Convergence
    from learngene.core.training import Classifier, fit

    args = dict(ViTView(ancestor).model_args(), embed_dim=embed_dim, num_heads=num_heads)
    if depth is not None:
        args["depth"] = depth
    L.seed_everything(seed, verbose=False)
    model = timm.create_model(arch, **args)
    targs = copy.copy(trainer_args or TrainerArgs(progress=False))
    targs.label = f"SN-Net anchor (width {embed_dim})"
    if patience is None:
        rec, _ = fit(Classifier(model, ANCHOR_OPTIM), dm, targs, epochs=epochs, limit_val_batches=0)
        return model.cpu().eval(), args, {"epochs": rec["epochs_run"]}
    # until validation stops improving: at most ``epochs`` (the cosine schedule over them),
    # stopped ``patience`` after the best, whose state is handed back
    rec, _ = fit(
        Classifier(model, ANCHOR_OPTIM), dm, targs, epochs="auto", auto=Convergence(cap=epochs, patience=patience)
    )
    return (
        model.cpu().eval(),
        args,
        {"epochs": rec["epochs_run"], "best_epoch": rec["best_epoch"], "val_top1": round(rec["best_val"], 2)},
    )


def distill_anchor(
    ancestor: nn.Module,
    dm,
    recipe: str = "embedded",
    seed: int = 0,
    trainer_args: TrainerArgs | None = None,
    epochs: int | None = None,
):
    """The narrow anchor distilled from the ancestor exactly as the pool's narrow auxiliary
    model is (the recipe's narrowest auxiliary: width, heads, loss, lr, epochs, distillation
    settings), at the ancestor's depth instead of the auxiliary's."""
    from learngene.core.training import fit
    from learngene.pool.build import resolve_recipe_path
    from learngene.pool.distill import DistillModule, make_student, student_args
    from learngene.pool.recipe import load_recipe

    rec = load_recipe(resolve_recipe_path(recipe))
    narrow = min(rec.auxiliary, key=lambda a: a.embed_dim)
    spec = dataclasses.replace(narrow, name="anchor", depth=ViTView(ancestor).depth, epochs=epochs or narrow.epochs)
    L.seed_everything(seed, verbose=False)
    student = make_student(spec, ancestor, seed)
    teacher = copy.deepcopy(ancestor)  # DistillModule freezes its teacher; the caller's stays as it is
    targs = copy.copy(trainer_args or TrainerArgs(progress=False))
    targs.label = "SN-Net anchor (distilled)"
    module = DistillModule(student, teacher, spec, dataclasses.replace(rec.distill, seed=seed))
    record, _ = fit(module, dm, targs, epochs=spec.epochs, limit_val_batches=0)
    return student.cpu().eval(), student_args(spec, ancestor), {"epochs": record["epochs_run"]}


def make_anchor(
    how: str,
    ancestor: nn.Module,
    dm,
    seed: int = 0,
    trainer_args: TrainerArgs | None = None,
    epochs: int | None = None,
    recipe: str = "embedded",
):
    """(model, model_args, record) of a narrow anchor made ``how`` (a name of learngene.core.registries.ANCHORS);
    ``epochs`` shortens it (smoke runs); ``recipe``: the pool recipe whose narrow auxiliary
    model a distilled anchor copies."""
    from learngene.core.registries import ANCHORS

    return ANCHORS[ANCHORS.check(how)](ancestor, dm, seed=seed, trainer_args=trainer_args, epochs=epochs, recipe=recipe)


def fixed_anchor(ancestor, dm, *, seed=0, trainer_args=None, epochs=None, recipe=None):
    """From scratch, the ancestor's fixed-epoch recipe."""
    return train_anchor(ancestor, dm, seed=seed, trainer_args=trainer_args, epochs=epochs or ANCHOR_EPOCHS)


def plateau_anchor(ancestor, dm, *, seed=0, trainer_args=None, epochs=None, recipe=None):
    """From scratch until validation stops improving (the best state kept)."""
    return train_anchor(
        ancestor,
        dm,
        seed=seed,
        trainer_args=trainer_args,
        epochs=epochs or PLATEAU_MAX_EPOCHS,
        patience=min(PLATEAU_PATIENCE, epochs or PLATEAU_PATIENCE),
    )


def distilled_anchor(ancestor, dm, *, seed=0, trainer_args=None, epochs=None, recipe="embedded"):
    """Distilled from the ancestor as the pool's narrow auxiliary model is."""
    return distill_anchor(ancestor, dm, recipe or "embedded", seed=seed, trainer_args=trainer_args, epochs=epochs)


def snnet(
    ancestor: nn.Module,
    dm,
    spec=None,
    *,
    embed_dim: int = 48,
    num_heads: int = 3,
    anchor_epochs: int = ANCHOR_EPOCHS,
    seed: int = 0,
    anchor: tuple | None = None,
    trainer_args: TrainerArgs | None = None,
    log=None,
) -> Zoo:
    """Train the narrow anchor (or take ``anchor``: what `train_anchor` returned), stitch it
    to a copy of the ancestor, train all stitches jointly with assemble's recipe (``spec``:
    a JointSpec or an AssembleSpec, default budget). The anchor itself is not changed."""
    spec = spec if spec is not None else JointSpec(seed=seed)
    seconds = {}
    if anchor is None:
        t0 = time.perf_counter()
        anchor = train_anchor(ancestor, dm, embed_dim, num_heads, anchor_epochs, seed, trainer_args=trainer_args)[:2]
        seconds["anchor"] = time.perf_counter() - t0
        if log:
            log(f"snnet seed {seed}: narrow anchor trained in {seconds['anchor']:.0f} s")
    t0 = time.perf_counter()
    anchor, anchor_args = anchor[:2]
    # copies, trainable: the caller's ancestor may be frozen (a teacher elsewhere) and stays as it is
    pm = PoolModel(
        copy.deepcopy(anchor),
        copy.deepcopy(ancestor),
        anchor_args,
        ViTView(ancestor).model_args(),
        aux_names=("anchor", "ancestor"),
    ).requires_grad_(True)
    init_lstsq(pm, init_images(dm))
    # params and FLOPs per member, as assemble counts them (the FLOPs also feed --sampling flops)
    rows = [{k: r[k] for k in ("id", "kind", "params", "flops")} for r in static_rows(pm)]
    trained = train_descendants(
        pm,
        pm.specs,
        spec,
        dm,
        teacher=copy.deepcopy(ancestor),
        flops={r["id"]: r["flops"] for r in rows},
        trainer_args=trainer_args or TrainerArgs(progress=False),
    )
    seconds["stitch + joint training"] = time.perf_counter() - t0
    val = evaluate_specs(pm, pm.specs, dm.val_dataloader())
    test = evaluate_specs(pm, pm.specs, dm.test_dataloader())
    for r in rows:
        r.update(val_top1=val[r["id"]]["top1"], test_top1=test[r["id"]]["top1"], test_top5=test[r["id"]]["top5"])
    members = []
    for s, r in zip(pm.specs, rows):
        arch, args = pm.descendant_args(s)
        model = pm.descendant(s)
        members.append(
            Member(
                s.id,
                s.kind,
                lambda m=model: m,
                arch,
                args,
                dict(dm.data_config),
                params=r["params"],
                flops=r["flops"],
                accuracy={k: r[k] for k in ("val_top1", "test_top1", "test_top5")},
                provenance={"method": "snnet", "source": f"snnet:{s.id}"},
                _model=model,
            )
        )
    if log:
        log(
            f"snnet seed {seed}: {len(rows)} members, mean test top1 "
            f"{sum(r['test_top1'] for r in rows) / len(rows):.2f}"
        )
    return Zoo("snnet", members, seconds, stored_params=count_params(pm), steps=trained["steps"])
