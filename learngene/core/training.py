"""Lightning pieces shared by every stage that trains: the optimiser/schedule recipe,
a plain classifier module, the Trainer factory and evaluation.

Lightning lives here and in the stages' own LightningModules; models stay plain nn.Modules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping


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
    extra: dict = field(default_factory=dict)


_WARNED_BUSY = []


def warn_if_busy(using: int) -> None:
    """Once per process: say so when other jobs already load the cores (a training epoch
    that takes 3 s on idle cores took 30-100 s beside other jobs, silently)."""
    from learngene.core.limits import cores

    if _WARNED_BUSY or os.environ.get("LEARNGENE_NO_LOAD_WARNING"):
        return
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return
    n = cores()
    if load > n:
        _WARNED_BUSY.append(load)
        print(
            f"learngene: warning: the load average is {load:.1f} on {n} cores before this run adds {using} "
            "thread(s): other jobs compete for the cores, so training will be slow (--threads N sets ours)",
            file=sys.stderr,
            flush=True,
        )


def core_plan(threads: int | None, workers: int) -> int:
    """Intra-op threads for a run whose DataLoader has ``workers`` processes: the cores the
    workers leave, so the two never exceed the cores (``threads`` given: that). An
    OMP_NUM_THREADS the caller set is respected."""
    from learngene.core.limits import cores

    if threads is not None:
        return threads
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    return max(1, cores() - workers)


class CoreBudget(L.Callback):
    """Sets torch's threads from the DataLoader's workers when training starts (see core_plan),
    and warns once when the machine is already busy."""

    def __init__(self, threads: int | None):
        self.threads = threads

    def setup(self, trainer, pl_module, stage=None):
        dm = getattr(trainer, "datamodule", None)
        workers = int(getattr(dm, "num_workers", 0) or 0)
        n = core_plan(self.threads, workers)
        if trainer.accelerator is not None and type(trainer.accelerator).__name__ == "CPUAccelerator":
            torch.set_num_threads(n)
        warn_if_busy(n + workers)


class EpochLines(L.Callback):
    """One line per epoch on stderr (rank 0): what a log wants instead of a progress bar."""

    def __init__(self, label: str):
        self.label, self.t0 = label, 0.0

    def on_train_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            m = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
            vals = ", ".join(f"{k} {v:.4g}" for k, v in sorted(m.items()))
            total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
            if any(isinstance(c, EarlyStopping) for c in trainer.callbacks):
                total = f"<={total} (auto)"
            print(
                f"{self.label}: epoch {trainer.current_epoch + 1}/{total}, step {trainer.global_step}"
                f"{', ' + vals if vals else ''} ({time.perf_counter() - self.t0:.0f} s)",
                file=sys.stderr,
                flush=True,
            )


# --------------------------------------------------------------------------- convergence


@dataclass(frozen=True)
class Convergence:
    """``--epochs auto``: train at most ``cap`` epochs, stop ``patience`` epochs after the
    best validation score (Lightning's EarlyStopping), and hand back the best state, not the
    last. The learning-rate schedule runs over the cap. ``min_epochs``: no stop before them
    (under a cosine schedule, validation at the peak learning rate says little of where the
    decay will take it: a fit of the digits stopped at epoch 12 of 44, its best the 2nd)."""

    cap: int = 200
    patience: int = 20
    min_delta: float = 0.0
    min_epochs: int = 0
    # > 0: the number of validation images behind a top1 monitor; the state handed back is then
    # the latest within one standard error of the peak, not the peak (see KeepBest)
    one_se_of: int = 0


class KeepBest(L.Callback):
    """Keeps (in memory, on the CPU) the state of the module being trained at its best
    validation score, and records the epoch and the score: every training run records where
    it peaked; with ``restore``, the best state is put back when training ends.

    ``one_se_of`` (how many validation images a top1 monitor, in %, is measured on): the state
    kept is the latest whose score is within one standard error of the peak's,
    sqrt(p (1 - p) / n), not the peak itself (the one-standard-error rule of Breiman et al.). Under a decaying learning
    rate a later epoch is the more converged one, and a peak that leads it by less than the
    validation split's own noise is as likely luck: on 500 validation images at 91% one
    standard error is 1.3 points (a fit of the animals folder peaked at epoch 24 of 32 with
    91.6%, 91.2% test; its last epoch scored 91.4% on validation and 92.8% on test)."""

    def __init__(self, monitor: str, part=None, mode: str = "max", restore: bool = False, one_se_of: int = 0):
        self.monitor, self.part, self.mode, self.restore = monitor, part, mode, restore
        self.one_se_of = one_se_of if mode == "max" else 0
        self.best: float | None = None  # the state kept: its score and epoch
        self.epoch: int | None = None
        self.state: dict | None = None
        self.peak: float | None = None  # the best score seen, and its epoch
        self.peak_epoch: int | None = None

    def _module(self, pl_module) -> nn.Module:
        return self.part(pl_module) if self.part is not None else getattr(pl_module, "model", pl_module)

    def tolerance(self) -> float:
        """How far below the peak a later state may score and still be kept (0: the peak only)."""
        if not self.one_se_of or self.peak is None:
            return 0.0
        p = min(max(self.peak / 100, 0.0), 1.0)
        return 100 * math.sqrt(p * (1 - p) / self.one_se_of)

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        v = float(trainer.callback_metrics[self.monitor])
        epoch = 0 if trainer.state.fn == "validate" else trainer.current_epoch + 1
        if self.peak is None or (v > self.peak if self.mode == "max" else v < self.peak):
            self.peak, self.peak_epoch = v, epoch
        elif not (self.one_se_of and v >= self.peak - self.tolerance()):
            return
        self.best, self.epoch = v, epoch
        self.state = {k: t.detach().to("cpu", copy=True) for k, t in self._module(pl_module).state_dict().items()}

    def on_fit_end(self, trainer, pl_module):
        if self.restore and self.state is not None:
            self._module(pl_module).load_state_dict(self.state)

    # kept in Lightning's checkpoints, so a resumed run still knows its best so far
    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "epoch": self.epoch,
            "state": self.state,
            "peak": self.peak,
            "peak_epoch": self.peak_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best, self.epoch, self.state = state.get("best"), state.get("epoch"), state.get("state")
        self.peak, self.peak_epoch = state.get("peak", self.best), state.get("peak_epoch", self.epoch)


class PatientStopping(EarlyStopping):
    """Lightning's EarlyStopping that signals no stop before ``min_epochs``: the best is
    tracked from the start and patience counts from it, but a plateau early in the schedule
    does not end the run. (The Trainer's own ``min_epochs`` keeps a stop signalled earlier and
    ends the run at ``min_epochs`` even when the score has improved since.)"""

    def __init__(self, *args, min_epochs: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.min_epochs = min_epochs

    def _run_early_stopping_check(self, trainer) -> None:
        stop = trainer.should_stop
        super()._run_early_stopping_check(trainer)
        if trainer.current_epoch + 1 < self.min_epochs:
            trainer.should_stop = stop  # what it was before this check: another callback's stop stands


def resolve_epochs(epochs, default: int, flag: str = "--epochs"):
    """``epochs`` as given (an int, ``"auto"``), or ``default``."""
    from learngene.core.limits import epochs as bounded

    return default if epochs is None else bounded(epochs, flag)


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
        if is_auto or targs.max_epochs > 0 or (steps or 0) > 0:
            trainer.fit(module, datamodule=dm, **fit_kw)
        elif restore and keep.state is not None:  # no epoch to train: the validated state stands
            keep.on_fit_end(trainer, module)
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


class FiniteLoss(L.Callback):
    """Stop a run whose loss went NaN or inf, in one line, before anything is written.
    Checked on the epoch's mean loss (one device sync an epoch, not one a step)."""

    def __init__(self, label: str):
        self.label = label

    def on_train_epoch_end(self, trainer, pl_module):
        from learngene.core.errors import UserError

        for k, v in trainer.callback_metrics.items():
            if "loss" in k and v.numel() == 1 and not torch.isfinite(v).all():
                raise UserError(
                    f"{self.label}: training diverged at epoch {trainer.current_epoch + 1} ({k} is {float(v)}): "
                    "nothing written; lower the learning rate or check the weights and data"
                )


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
        *([EpochLines(args.label)] if args.log_lines else []),
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


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, topk=(1, 5)) -> dict[int, int]:
    """How many labels are among the k highest logits, for each k (k capped at #classes)."""
    k_max = min(max(topk), logits.shape[-1])
    hits = logits.topk(k_max, dim=-1).indices == labels[:, None]
    return {k: int(hits[:, : min(k, k_max)].any(-1).sum()) for k in topk}


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: str | torch.device = "cpu", topk=(1, 5)) -> dict[str, float]:
    """top-k accuracy (percent) of a classifier over a loader."""
    model.eval().to(device)
    correct = {k: 0 for k in topk}
    n = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        for k, h in topk_hits(model(x), y, topk).items():
            correct[k] += h
        n += len(y)
    return {f"top{k}": 100.0 * correct[k] / max(n, 1) for k in topk}


@torch.no_grad()
def features_and_logits(
    model: nn.Module, loader, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pre-logit features, logits and labels over a loader, in one pass (timm's
    forward_features -> forward_head(pre_logits=True) -> head)."""
    model.eval().to(device)
    feats, logits, labels = [], [], []
    for x, y in loader:
        f = model.forward_head(model.forward_features(x.to(device)), pre_logits=True)
        feats.append(f.float().cpu())
        logits.append(model.head(f).float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(logits), torch.cat(labels)


def knn_top1(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """DINO's weighted kNN classifier on L2-normalised features: the k nearest training
    features by cosine similarity (faiss IndexFlatIP) vote with weight exp(sim / T)."""
    import faiss  # lazily: faiss and torch can clash over OpenMP depending on import order

    tr = F.normalize(train_f.float(), dim=1).numpy()
    te = F.normalize(test_f.float(), dim=1).numpy()
    index = faiss.IndexFlatIP(tr.shape[1])
    index.add(tr)
    k = min(k, len(tr))
    sims, idx = index.search(te, k)
    sims, idx = torch.from_numpy(sims), torch.from_numpy(idx).long()
    n_cls = int(max(train_y.max(), test_y.max())) + 1
    votes = torch.zeros(len(te), n_cls)
    votes.scatter_add_(1, train_y[idx], (sims / temperature).exp())
    return round(100 * (votes.argmax(1) == test_y).float().mean().item(), 2)
