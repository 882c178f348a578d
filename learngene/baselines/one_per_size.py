"""What a user would do instead of a zoo builder: one model per size, each made from the same
ancestor on its own.

- `kd`: a plain DeiT-style ViT at the ancestor's depth, as wide as fits the size, distilled
  from the ancestor with the pool's own distillation loss (CE + KL + block and attention
  feature matching, `learngene.pool.distill.DistillModule`) from random init;
- `prune`: the same architecture, but its weights are the ancestor's structurally pruned to
  that width with Torch-Pruning (`torch-pruning`: group L2 magnitude, embedding, heads' dims
  and MLP hidden together, the head's classes kept), then distilled the same way.

Both use the same student architecture at a size, so they differ in their start alone. Each
size trains ``steps`` optimizer steps (a share of a method's budget) or until validation
stops improving (``epochs="auto"``), and reports its record and its training FLOPs.
"""

from __future__ import annotations

import copy
import dataclasses

import lightning as L
import torch
import torch.nn as nn

from learngene.core.training import TrainerArgs, fit
from learngene.core.vit import ViTView
from learngene.pool.distill import STUDENT_ARCH, DistillModule
from learngene.pool.prune import pruned
from learngene.pool.recipe import AuxSpec, DistillSpec
from learngene.zoo import Zoo

INITS = ("random", "pruned")


def student_args(ancestor: nn.Module, width: int) -> dict:
    """The ancestor's shape at ``width`` (its depth, heads, MLP ratio, input and classes)."""
    return {**ViTView(ancestor).model_args(), "embed_dim": width}


def params_at(ancestor: nn.Module, width: int) -> int:
    import timm

    with torch.device("meta"):
        return sum(p.numel() for p in timm.create_model(STUDENT_ARCH, **student_args(ancestor, width)).parameters())


def width_for(ancestor: nn.Module, params: int) -> int:
    """The widest student (a multiple of the ancestor's heads) with at most ``params``."""
    s = ViTView(ancestor).shape
    w = s.num_heads
    while w + s.num_heads <= s.embed_dim and params_at(ancestor, w + s.num_heads) <= params:
        w += s.num_heads
    return w


def train_flops(student: nn.Module, teacher: nn.Module | None, batch: torch.Tensor) -> int:
    """FLOPs of one training step on ``batch`` (the student forward and backward, the frozen
    teacher's forward), counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    s = copy.deepcopy(student).train()
    with counter:
        if teacher is not None:
            with torch.no_grad():
                teacher.eval()(batch)
        s(batch).float().logsumexp(-1).sum().backward()
    return int(counter.get_total_flops())


def per_size(
    ancestor: nn.Module,
    dm,
    widths: list[int],
    *,
    init: str = "random",
    steps: int | None = None,
    epochs: int | str | None = None,
    cap: int = 300,
    patience: int = 30,
    seed: int = 0,
    lr: float = 2e-3,
    distill: DistillSpec | None = None,
    trainer_args: TrainerArgs | None = None,
) -> Zoo:
    """One student per width (`kd` from random init, `prune` from the pruned ancestor),
    each distilled from ``ancestor`` for ``steps`` steps or ``epochs`` (``"auto"``: until
    validation top1 stops improving, ``cap`` / ``patience`` epochs)."""
    from learngene.baselines.alone import member
    from learngene.core.convergence import Convergence
    from learngene.core.errors import UserError

    if init not in INITS:
        raise UserError(f"per-size init {init!r} (choose from {', '.join(INITS)})")
    if (steps is None) == (epochs is None):
        raise UserError("per_size takes steps or epochs")
    cfg = dataclasses.replace(distill or DistillSpec(), seed=seed)
    method = "kd" if init == "random" else "prune"
    targs = copy.copy(trainer_args or TrainerArgs(progress=False))
    teacher = copy.deepcopy(ancestor).cpu().eval()
    depth = ViTView(ancestor).depth
    members, total_steps, flops, records = [], 0, 0, {}
    batch = next(iter(dm.train_dataloader()))[0]
    for w in widths:
        L.seed_everything(seed, verbose=False)
        if init == "pruned":
            student = pruned(ancestor, w)
        else:
            import timm

            student = timm.create_model(STUDENT_ARCH, **student_args(ancestor, w))
        spec = AuxSpec(name=f"w{w}", embed_dim=w, num_heads=ViTView(ancestor).shape.num_heads, depth=depth,
                       positions="front,end", epochs=epochs or 1, lr=lr)  # fmt: skip
        targs.label = f"{method} width {w}"
        module = DistillModule(student, teacher, spec, cfg)
        if steps is not None:
            rec, _ = fit(module, dm, targs, steps=steps, limit_val_batches=0)
        else:
            rec, _ = fit(
                module,
                dm,
                targs,
                epochs=epochs,
                auto=Convergence(cap=cap, patience=patience),
                part=lambda m: m.student,
            )
        total_steps += rec["steps"]
        flops += rec["steps"] * train_flops(student, teacher, batch)
        records[f"{method}-w{w}"] = {k: rec.get(k) for k in ("epochs_run", "best_epoch", "steps")}
        members.append(
            member(f"{method}-w{w}", method, student.cpu().eval(), dm, method, STUDENT_ARCH, student_args(ancestor, w))
        )
    zoo = Zoo(method, members, stored_params=sum(m.params for m in members), steps=total_steps)
    zoo.train_flops, zoo.records = flops, records
    return zoo
