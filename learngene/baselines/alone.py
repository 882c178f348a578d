"""Training each member of a baseline on its own (vanilla learngene, scratch), and the row
of numbers every member gets: params, FLOPs, validation and test accuracy."""

from __future__ import annotations

import copy

import lightning as L
import torch.nn as nn

from learngene.core.evaluation import evaluate
from learngene.core.training import Classifier, OptimConfig, TrainerArgs, fit
from learngene.stitch.stitched import count_flops, count_params
from learngene.zoo import Member, Zoo


def member(sid: str, kind: str, model: nn.Module, dm, method: str, architecture: str, model_args: dict) -> Member:
    """A trained model as a member, measured on ``dm``'s validation and test splits."""
    val = evaluate(model, dm.val_dataloader())
    test = evaluate(model, dm.test_dataloader())
    img = int(model_args["img_size"])
    return Member(
        sid,
        kind,
        lambda: model,
        architecture,
        model_args,
        dict(dm.data_config),
        params=count_params(model),
        flops=count_flops(model, img),
        accuracy={
            "val_top1": round(val["top1"], 2),
            "test_top1": round(test["top1"], 2),
            "test_top5": round(test["top5"], 2),
        },
        provenance={"method": method, "source": f"{method}:{sid}"},
        _model=model.eval(),
    )


def train_alone(
    models: dict[str, tuple],
    dm,
    steps: int,
    seed: int,
    optim: OptimConfig,
    method: str,
    trainer_args: TrainerArgs | None = None,
    log=None,
) -> Zoo:
    """Train each member on its own with cross-entropy for ``steps`` optimizer steps:
    models maps id -> (kind, model, param groups or None, architecture, model_args)."""
    targs = copy.copy(trainer_args or TrainerArgs(progress=False))
    members = []
    for sid, (kind, model, groups, arch, args) in models.items():
        L.seed_everything(seed, verbose=False)
        if steps > 0:
            targs.label = f"{method} {sid}"
            fit(Classifier(model, optim, groups), dm, targs, steps=steps, limit_val_batches=0)
        members.append(member(sid, kind, model.cpu().eval(), dm, method, arch, args))
        if log:
            log(f"{method} seed {seed} {sid}: test top1 {members[-1].accuracy['test_top1']:.2f}")
    return Zoo(method, members, steps=steps * len(models), stored_params=sum(m.params for m in members))
