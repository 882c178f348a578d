"""Lightning pieces shared by every stage that trains: the optimiser/schedule recipe,
a plain classifier module, the Trainer factory and evaluation.

Lightning lives here and in the stages' own LightningModules; models stay plain nn.Modules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import warnings
from dataclasses import dataclass, field

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F

from learngene.core.callbacks import CoreBudget, EpochLines, FiniteLoss, StageClock, StageLines
from learngene.core.convergence import Convergence, KeepBest, PatientStopping


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to zero: the DeiT recipe, scaled down."""

    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    label_smoothing: float = 0.0


def param_groups(modules: nn.Module | list[nn.Module], weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, tokens and position embeddings (as timm does)."""
    mods = modules if isinstance(modules, list) else [modules]
    decay, no_decay = [], []
    for m in mods:
        for name, p in m.named_parameters():
            if p.requires_grad:
                (decay if decays(name, p) else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def decays(name: str, p: torch.Tensor) -> bool:
    return not (p.ndim <= 1 or name.endswith(("cls_token", "pos_embed", "dist_token", "reg_token")))


def lr_groups(model: nn.Module, weight_decay: float, lr_of) -> list[dict]:
    """Param groups by learning rate (``lr_of(name)``) and by weight decay as in param_groups."""
    groups: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((lr_of(name), decays(name, p)), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": weight_decay if d else 0.0} for (lr, d), ps in groups.items()]


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float):
    warmup = max(1, int(round(warmup_fraction * total_steps)))
    total = max(total_steps, warmup + 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / (total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def configure_adamw(module: L.LightningModule, params, cfg: OptimConfig):
    # the fused kernel: one pass over all parameters instead of a loop of small ops (on 2
    # cores 5 ms a step instead of 17 for the embedded ancestor at batch 16, ~10% of the
    # step); full precision only, where Lightning's gradient clipping allows it
    params = list(params)
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = str(module.trainer.precision) in ("32-true", "32", "64-true", "64") and all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in tensors
    )
    opt = torch.optim.AdamW(params, lr=cfg.lr, fused=fused or None)
    total = module.trainer.estimated_stepping_batches
    sched = warmup_cosine(opt, int(total), cfg.warmup_fraction)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Classifier(L.LightningModule):
    """Trains any image classifier with cross-entropy; logs train loss and val accuracy."""

    def __init__(self, model: nn.Module, optim: OptimConfig | None = None, groups: list[dict] | None = None):
        super().__init__()
        self.model = model
        self.optim = optim or OptimConfig()
        self.groups = groups  # param groups with their own 'lr' (default: one lr for all)

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.model(x), y, label_smoothing=self.optim.label_smoothing)
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        acc = (self.model(x).argmax(-1) == y).float().mean()
        self.log("val/top1", acc * 100, prog_bar=True, batch_size=len(y))

    def configure_optimizers(self):
        return configure_adamw(self, self.groups or param_groups(self.model, self.optim.weight_decay), self.optim)


@dataclass
class TrainerArgs:
    """What a user may tune of the Trainer from the CLI, with CPU-friendly defaults."""

    max_epochs: int = 1
    accelerator: str = "auto"
    devices: str | int = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str | None = None
    progress: bool = True  # a progress bar (a terminal)
    log_lines: bool = False  # a line per epoch on stderr (a log: no terminal to draw a bar on)
    label: str = "train"  # what the lines and errors call this run ("build-pool narrow", ...)
    threads: int | None = None  # torch intra-op threads (None: the cores the DataLoader workers leave)
    stage: StageClock | None = None  # the stage this run is one of (its lines say the stage's time left)
    extra: dict = field(default_factory=dict)


def resolve_epochs(epochs, default: int, flag: str = "--epochs"):
    """``epochs`` as given (an int, ``"auto"``), or ``default``."""
    from learngene.core.limits import epochs as bounded

    return default if epochs is None else bounded(epochs, flag)


def resumable(ckpt_dir: str | os.PathLike, callbacks=()) -> dict:
    """`fit` keywords that checkpoint every epoch in ``ckpt_dir`` (the newest epoch only;
    last.ckpt links to it: no second copy of a large model) and continue from its last.ckpt
    when one is there: a run cut off resumes with its optimizer, schedule, best-so-far state
    and patience count (all in Lightning's checkpoint)."""
    from pathlib import Path

    from lightning.pytorch.callbacks import ModelCheckpoint

    last = Path(ckpt_dir) / "last.ckpt"
    ckpt = ModelCheckpoint(
        dirpath=ckpt_dir, filename="epoch{epoch:03d}", auto_insert_metric_name=False, save_last="link", save_top_k=1
    )
    return dict(
        enable_checkpointing=True,
        callbacks=[ckpt, *callbacks],
        ckpt_path=str(last) if last.is_file() else None,
        weights_only=True,
    )


def fit(
    module: L.LightningModule,
    dm,
    targs: TrainerArgs,
    *,
    epochs=None,
    steps: int | None = None,
    monitor: str = "val/top1",
    auto: Convergence = Convergence(),
    part=None,
    mode: str = "max",
    restore: bool | None = None,
    validate_first: bool = False,
    **trainer_kw,
) -> tuple[dict, L.Trainer]:
    """Train ``module`` on ``dm`` for ``epochs`` (an int) or until it converges (``"auto"``:
    ``auto``'s cap and patience on ``monitor``, the best state restored); returns the record
    every artifact keeps (epochs asked and run, the best epoch and its validation score,
    steps) and the Trainer. Every training verb goes through here: the same early stopping,
    records, thread bound and CPU kernels.

    ``steps``: a budget of optimizer steps instead of epochs (the baselines trained alone,
    LiGO's operator), usually with ``limit_val_batches=0``.
    ``restore``: hand back the best state of ``part`` (default: with ``auto`` only).
    ``validate_first``: validate before training, as epoch 0, so that the starting state
    competes too (a stitched pool at its least-squares init: training can then only return
    something at least as good on validation as what it started from)."""
    targs = dataclasses.replace(targs)
    is_auto = epochs == "auto"
    if steps is not None:
        targs.max_epochs, trainer_kw["max_steps"] = -1, int(steps)  # the step budget decides
    else:
        targs.max_epochs = auto.cap if is_auto else int(epochs)
    restore = is_auto if restore is None else restore
    keep = KeepBest(monitor, part=part, mode=mode, restore=restore, one_se_of=auto.one_se_of if is_auto else 0)
    callbacks = [keep, *trainer_kw.pop("callbacks", [])]
    if is_auto:
        if trainer_kw.get("limit_val_batches") == 0:
            raise ValueError("--epochs auto needs validation")
        callbacks.append(
            PatientStopping(
                monitor,
                patience=auto.patience,
                mode=mode,
                min_delta=auto.min_delta,
                check_on_train_epoch_end=False,
                min_epochs=auto.min_epochs,
            )
        )
    fit_kw = {k: trainer_kw.pop(k) for k in ("ckpt_path", "weights_only") if k in trainer_kw}
    trainer = make_trainer(targs, callbacks=callbacks, **trainer_kw)
    with plain_attention(module, _on_cpu(trainer)):
        if validate_first:
            trainer.validate(module, datamodule=dm, verbose=False)
        if is_auto or (targs.max_epochs if steps is None else steps) > 0:
            trainer.fit(module, datamodule=dm, **fit_kw)
    rec = {
        "epochs": epochs if is_auto or epochs is None else int(epochs),
        "epochs_run": int(trainer.current_epoch),
        "best_epoch": keep.epoch,
        "best_val": None if keep.best is None else round(keep.best, 4),
        "monitor": monitor,
        "steps": int(trainer.global_step),
        "restored_best": bool(restore and keep.state is not None),
    }
    if is_auto:
        rec.update(cap=auto.cap, patience=auto.patience, stopped_early=trainer.current_epoch < auto.cap)
        if auto.min_epochs:
            rec["min_epochs"] = min(auto.min_epochs, auto.cap)
        if keep.one_se_of:
            # the state kept is the latest within one standard error of the peak (KeepBest)
            rec.update(
                one_se_of=keep.one_se_of,
                peak_epoch=keep.peak_epoch,
                peak_val=None if keep.peak is None else round(keep.peak, 4),
            )
    return rec, trainer


def _on_cpu(trainer: L.Trainer) -> bool:
    try:
        return trainer.strategy.root_device.type == "cpu"
    except Exception:  # a strategy that has not placed itself yet: leave the kernels alone
        return False


@contextlib.contextmanager
def plain_attention(module: nn.Module, on: bool = True):
    """While training on the CPU, timm's attention computed as written (q @ k^T, softmax,
    @ v) instead of ``F.scaled_dot_product_attention``: the same function, and at these
    models' sequence lengths cheaper on the CPU's kernels (a training step of the embedded
    ancestor, 17 tokens, batch 16, 2 cores: 82-86 ms against 89-92 in Lightning; a bare
    forward and backward at 65 tokens 212 against 240 ms, at 197 tokens 348 against 370).
    On an accelerator the fused kernel stays. The modules' own setting is put back after."""
    mods = [m for m in module.modules() if isinstance(getattr(m, "fused_attn", None), bool)] if on else []
    was = [m.fused_attn for m in mods]
    for m in mods:
        m.fused_attn = False
    try:
        yield
    finally:
        for m, w in zip(mods, was):
            m.fused_attn = w


def make_trainer(args: TrainerArgs, default_root_dir: str | os.PathLike | None = None, **overrides) -> L.Trainer:
    """A quiet Trainer: no logger files, no model summary, gradient clipping 1.0."""
    kw = dict(
        max_epochs=args.max_epochs,
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=args.strategy,
        num_nodes=args.num_nodes,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=args.progress,
        num_sanity_val_steps=0,
        default_root_dir=default_root_dir,
    )
    if args.precision:
        kw["precision"] = args.precision
    kw.update(args.extra)
    kw.update(overrides)
    kw["callbacks"] = [
        FiniteLoss(args.label),
        CoreBudget(args.threads),
        *([EpochLines(args.label, args.stage)] if args.log_lines else []),
        *([StageLines(args.stage, args.label)] if args.stage is not None and (args.log_lines or args.progress) else []),
        *kw.get("callbacks", []),
    ]
    quiet_lightning()
    check_accelerator(kw["accelerator"])
    try:
        return L.Trainer(**kw)
    except Exception as e:  # Lightning's MisconfigurationException: flags that do not fit this machine
        if type(e).__name__ == "MisconfigurationException" or isinstance(e, ValueError):
            from learngene.core.errors import UserError

            raise UserError(
                f"Lightning flags do not fit this machine: {str(e).strip().splitlines()[0][:200]}"
            ) from None
        raise


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu")


def check_accelerator(accelerator) -> None:
    """--accelerator gpu on a machine without one is the user's input, not our crash."""
    from learngene.core.errors import UserError

    if not isinstance(accelerator, str):
        return
    if accelerator not in ACCELERATORS:
        raise UserError(f"unknown --accelerator {accelerator!r} (choose from {', '.join(ACCELERATORS)})")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(f"--accelerator {accelerator}: no CUDA GPU is visible on this machine (use --accelerator cpu)")
    if accelerator == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--accelerator mps: no Apple GPU on this machine (use --accelerator cpu)")


def quiet_lightning() -> None:
    """Lightning's tips about workers and GPUs are noise on the embedded data."""
    import logging

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*GPU available but not used.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    # a step budget without validation (a baseline trained alone, LiGO's operator)
    warnings.filterwarnings("ignore", ".*val_dataloader.* but have no .validation_step.*")
    # a resumed build-pool finds its own checkpoint folder: that is the point of resuming
    warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
    # distillation keeps its frozen teacher in eval mode on purpose
    warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode at the start of training.*")
