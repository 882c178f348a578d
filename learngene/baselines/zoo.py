"""What every method hands back: a `Zoo`, its members as standalone timm ViTs with the
numbers assemble reports for a pool's descendants, so the pool and its baselines are
measured and compared the same way."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import lightning as L
import torch.nn as nn

from learngene.training import Classifier, OptimConfig, TrainerArgs, evaluate, make_trainer


@dataclass
class Zoo:
    method: str
    models: dict[str, nn.Module]  # member id -> standalone model (eval mode, CPU)
    rows: list[dict]  # per member: id, kind, params, flops, val_top1, test_top1, test_top5
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    stored_params: int = 0  # parameters kept on disk to make every member
    steps: int = 0  # optimizer steps spent training the members (all of them together)


def member_row(sid: str, kind: str, model: nn.Module, img_size: int, dm) -> dict:
    from learngene.assemble.model import count_flops, count_params

    val = evaluate(model, dm.val_dataloader())
    test = evaluate(model, dm.test_dataloader())
    return {"id": sid, "kind": kind, "params": count_params(model), "flops": count_flops(model, img_size),
            "val_top1": round(val["top1"], 2), "test_top1": round(test["top1"], 2), "test_top5": round(test["top5"], 2)}


def pool_zoo(pool, rows: list[dict], method: str = "pool", revision: str | None = "latest", seconds=None,
             steps: int = 0) -> Zoo:
    """A pool's descendants as a Zoo, with the rows (and optimizer steps) of the
    `assemble --all` run that trained them."""
    from learngene.assemble.api import load_pool_model
    from learngene.assemble.model import count_params
    from learngene.pool import Pool

    pool = pool if isinstance(pool, Pool) else Pool.open(pool)
    pm, _ = load_pool_model(pool, revision)
    keep = ("id", "kind", "params", "flops", "val_top1", "test_top1", "test_top5")
    return Zoo(method, {s.id: pm.descendant(s) for s in pm.specs}, [{k: r[k] for k in keep} for r in rows],
               dict(seconds or {}), count_params(pm), steps)


def train_alone(models: dict[str, tuple[str, nn.Module, list[dict] | None]], dm, steps: int, seed: int,
                optim: OptimConfig, img_size: int, method: str, trainer_args: TrainerArgs | None = None,
                log=None) -> Zoo:
    """Train each member on its own with cross-entropy for ``steps`` optimizer steps:
    models maps id -> (kind, model, param groups or None)."""
    targs = copy.copy(trainer_args or TrainerArgs(progress=False))
    targs.max_epochs = -1  # the step budget decides
    out, rows = {}, []
    for sid, (kind, model, groups) in models.items():
        L.seed_everything(seed, verbose=False)
        if steps > 0:
            make_trainer(targs, max_steps=steps, limit_val_batches=0).fit(Classifier(model, optim, groups), datamodule=dm)
        out[sid] = model.cpu().eval()
        rows.append(member_row(sid, kind, model, img_size, dm))
        if log:
            log(f"{method} seed {seed} {sid}: test top1 {rows[-1]['test_top1']:.2f}")
    return Zoo(method, out, rows, steps=steps * len(models),
               stored_params=sum(r["params"] for r in rows))
