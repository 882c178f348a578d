"""Training until it converges (``--epochs auto``): the cap and patience, the state kept at the
best validation score (or the latest within one standard error of it), and early stopping
that waits for a minimum of epochs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
import torch.nn as nn
from lightning.pytorch.callbacks import EarlyStopping

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
