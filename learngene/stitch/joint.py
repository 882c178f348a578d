"""Training stitched descendants (one LightningModule, shared by `assemble` and SN-Net):
the whole set jointly, one sampled descendant per step, or a single target descendant.

loss = 0.5 * CE(descendant, y) + 0.5 * T^2 KL(ancestor/T || descendant/T), ancestor frozen.

Inherited weights (instances, embeddings, heads) already compute something good; a fresh
learning rate wrecks that (calibration: a stitched descendant fell from 94% to 81% after
one epoch at 1e-3). So they train at a lower rate than the new stitches, both with warm-up
and cosine decay, and the module keeps the best state by mean validation accuracy over
the descendants it trains, starting from the initialisation itself: training can only
return something at least as good on validation as what it started from.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F

from learngene.core.convergence import Convergence
from learngene.core.training import OptimConfig, configure_adamw, param_groups
from learngene.stitch.descendants import DescSpec
from learngene.stitch.stitched import PoolModel


@dataclass(frozen=True)
class JointSpec:
    """How stitched descendants train jointly (assemble's training, SN-Net's too); every field
    is a CLI option of `learngene assemble`. Frozen: change a copy with `dataclasses.replace`."""

    # None: the default budget of the mode. Joint training shares its steps among all
    # descendants (18 on a depth-6 pool), a target gets every step: 40 vs 10 epochs
    # (benchmarks/assemble.py, 3-seed means: 20 joint epochs left 6 of 18 descendants under
    # 95%, 40 leave 2, the two stitched right after narrow block 0, which 80 did not lift).
    epochs: int | str | None = None  # or "auto": until the mean validation top1 stops improving (JOINT_AUTO)
    lr: float = 1e-4  # inherited weights
    stitch_lr: float = 1e-3  # new stitches
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    kl_weight: float = 0.5  # 0.5 CE + 0.5 KL
    temperature: float = 1.0
    tune: str = "all"  # 'stitches' or 'all' (stitches + instances, embeddings, heads)
    sampling: str = "uniform"  # 'uniform' over descendants, 'flops' (a FLOPs group, then a member), or 'deficit'
    # (half the steps uniform, half to the members below the best member no costlier: deficit_weights)
    batch_size: int = 64
    seed: int = 0


DEFAULT_EPOCHS = {"all": 40, "target": 10}
# --epochs auto: at most 300 epochs, stopped 20 after the best mean validation top1
JOINT_AUTO = Convergence(cap=300, patience=20)


def deficit_weights(acc: dict[str, float], flops: dict[str, int]) -> dict[str, float]:
    """Sampling probabilities for ``--sampling deficit``: half uniform, half in proportion to
    each member's deficit, the points its validation top1 is below the best member with no
    more FLOPs (itself included, so a member on the accuracy / FLOPs frontier has none).

    Why: a member that a cheaper member of the same pool beats is never the pick at any
    budget, and those are the stitches that uniform sampling leaves behind (clutter testbed,
    seed 0: the members with few narrow blocks before many wide ones, 8-15 points under the
    narrow auxiliary alone). The uniform half keeps every member's share at least half of what
    uniform sampling gives, so the frontier members keep training too."""
    ids = list(acc)
    n = len(ids)
    deficit = {}
    for i in ids:
        best = max(acc[j] for j in ids if flops.get(j, 0) <= flops.get(i, 0))
        deficit[i] = max(0.0, best - acc[i])
    total = sum(deficit.values())
    if total <= 0:
        return {i: 1 / n for i in ids}
    return {i: 0.5 / n + 0.5 * deficit[i] / total for i in ids}


def flops_groups(specs: list[DescSpec], flops: dict[str, int], n_groups: int = 4) -> list[list[DescSpec]]:
    """Descendants sorted by FLOPs and cut into groups of (nearly) equal size, so sampling a
    group uniformly gives small and large models the same share of the steps."""
    order = sorted(specs, key=lambda s: flops[s.id])
    n = min(n_groups, len(order))
    return [order[i * len(order) // n : (i + 1) * len(order) // n] for i in range(n)]


class AssembleModule(L.LightningModule):
    def __init__(
        self,
        pm: PoolModel,
        train_specs: list[DescSpec],
        spec: JointSpec,
        teacher: nn.Module | None = None,
        flops: dict[str, int] | None = None,
    ):
        super().__init__()
        self.pm = pm
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        self.train_specs = list(train_specs)
        self.spec = spec
        if spec.tune == "stitches":
            pm.narrow.requires_grad_(False)
            pm.wide.requires_grad_(False)
        if spec.sampling == "flops" and flops:
            self.groups = flops_groups(self.train_specs, flops)
        else:
            self.groups = [self.train_specs]
        self.flops = dict(flops or {})
        self.weights: dict[str, float] | None = None  # --sampling deficit: set at every validation
        self.rng = random.Random(spec.seed)
        self.history: list[dict] = []  # per validation: {'epoch', 'mean', 'acc': {id: top1}}
        self._counts: dict[str, torch.Tensor] = {}

    def trainable(self) -> nn.Module:
        """What trains, so what the best state is kept of: the stitches, and with ``tune
        all`` the inherited instances, embeddings and heads too."""
        if self.spec.tune == "all":
            return nn.ModuleDict({"stitches": self.pm.stitches, "narrow": self.pm.narrow, "wide": self.pm.wide})
        return nn.ModuleDict({"stitches": self.pm.stitches})

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        if self.spec.tune == "stitches":  # frozen inherited blocks: no dropout / drop-path either
            self.pm.narrow.eval()
            self.pm.wide.eval()
        return self

    # -- steps --------------------------------------------------------------------------------
    def sample(self) -> DescSpec:
        if self.weights is not None:
            return self.rng.choices(self.train_specs, weights=[self.weights[s.id] for s in self.train_specs])[0]
        return self.rng.choice(self.rng.choice(self.groups))

    def training_step(self, batch, batch_idx):
        x, y = batch
        spec = self.sample()
        logits = self.pm(x, spec)
        ce = F.cross_entropy(logits, y)
        loss = ce
        if self.teacher is not None and self.spec.kl_weight > 0:
            T = self.spec.temperature
            with torch.no_grad():
                t_logits = self.teacher(x)
            kl = (
                F.kl_div(
                    F.log_softmax(logits / T, -1),
                    F.log_softmax(t_logits / T, -1),
                    log_target=True,
                    reduction="batchmean",
                )
                * T
                * T
            )
            loss = (1 - self.spec.kl_weight) * ce + self.spec.kl_weight * kl
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def on_validation_epoch_start(self):
        self._counts = {s.id: torch.zeros(2, device=self.device) for s in self.train_specs}

    def validation_step(self, batch, batch_idx):
        x, y = batch
        for s in self.train_specs:
            pred = self.pm(x, s).argmax(-1)
            self._counts[s.id] += torch.stack(
                [(pred == y).sum().float(), torch.tensor(float(len(y)), device=self.device)]
            )

    def on_validation_epoch_end(self):
        acc = {}
        for sid, c in self._counts.items():
            c = self.trainer.strategy.reduce(c, reduce_op="sum")
            acc[sid] = float(100 * c[0] / c[1].clamp(min=1))
        mean = sum(acc.values()) / len(acc)
        epoch = 0 if self.trainer.state.fn == "validate" else self.current_epoch + 1
        self.history.append({"epoch": epoch, "mean": mean, "acc": acc})
        if self.spec.sampling == "deficit" and self.flops and len(acc) > 1:
            # the same on every rank: acc is reduced across them before this
            self.weights = deficit_weights(acc, self.flops)
        self.log("val/mean_top1", mean, prog_bar=True)

    def configure_optimizers(self):
        s = self.spec
        groups = [dict(g, lr=s.stitch_lr) for g in param_groups(self.pm.stitches, s.weight_decay)]
        if s.tune == "all":
            groups += [dict(g, lr=s.lr) for g in param_groups([self.pm.narrow, self.pm.wide], s.weight_decay)]
        groups = [g for g in groups if g["params"]]
        # configure_adamw's schedule multiplies each group's own lr
        return configure_adamw(
            self, groups, OptimConfig(lr=s.lr, weight_decay=s.weight_decay, warmup_fraction=s.warmup_fraction)
        )


def train_descendants(
    pm: PoolModel, train_specs: list[DescSpec], spec: JointSpec, dm, teacher=None, flops=None, trainer_args=None
) -> dict:
    """Train in place through core.training.fit; return {'best': record, 'history': [...],
    'steps': n, 'training': fit's record}. The best state (by mean validation top1, the
    initialisation included: epoch 0) is left in ``pm``; ``auto`` stops JOINT_AUTO.patience
    epochs after it."""
    from learngene.core.training import TrainerArgs, fit

    L.seed_everything(spec.seed, verbose=False)
    module = AssembleModule(pm, train_specs, spec, teacher=teacher, flops=flops)
    targs = copy.copy(trainer_args or TrainerArgs())
    epochs = spec.epochs if spec.epochs is not None else DEFAULT_EPOCHS["target" if len(train_specs) == 1 else "all"]
    targs.label = "assemble" if len(train_specs) > 1 else f"assemble {train_specs[0].id}"
    if targs.strategy == "ddp":
        # one sampled descendant per step leaves the other stitches without gradients
        targs.strategy = "ddp_find_unused_parameters_true"
    record, trainer = fit(
        module,
        dm,
        targs,
        epochs=epochs,
        monitor="val/mean_top1",
        auto=JOINT_AUTO,
        part=lambda m: m.trainable(),
        restore=True,
        validate_first=True,
    )
    pm.cpu().eval()
    best = next((dict(h) for h in module.history if h["epoch"] == record["best_epoch"]), {})
    return {
        "best": best,
        "history": module.history,
        "steps": trainer.global_step,
        "rank0": trainer.is_global_zero,
        "epochs": epochs,
        "training": record,
    }
