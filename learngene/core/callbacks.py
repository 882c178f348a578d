"""The callbacks every learngene Trainer carries: torch's threads fitted to the cores the
DataLoader leaves (and a warning when other jobs load them), a line per epoch in a log, and a
stop in one line when the loss goes non-finite."""

from __future__ import annotations

import os
import sys
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping

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


class StageClock:
    """A stage of several training runs (a fit's probes and its run, build-pool's auxiliary
    models): the optimizer steps planned for all of them (a run that may stop early counts
    its cap), so that each run's lines say the time the whole stage has left at the pace so
    far, not only the run's. Shared by the runs through `TrainerArgs.stage`."""

    def __init__(self, name: str, planned: int):
        self.name, self.planned, self.done, self.t0 = name, max(1, int(planned)), 0, time.perf_counter()
        self.bound = False  # a run that may stop early: the estimate is at most that

    def left(self, steps_in_run: int = 0) -> str:
        done = self.done + steps_in_run
        if done <= 0:
            return ""
        secs = (time.perf_counter() - self.t0) / done * max(0, self.planned - done)
        return f"{self.name}: {'at most ' if self.bound else ''}~{secs:.0f} s left"


class StageLines(L.Callback):
    """The stage's time left: a line when each of its runs starts, and its steps counted when
    the run ends (rank 0; a bar or a log alike)."""

    def __init__(self, clock: StageClock, label: str):
        self.clock, self.label, self.step0 = clock, label, 0

    def on_train_start(self, trainer, pl_module):
        self.step0 = trainer.global_step
        self.clock.bound |= EpochLines.auto(trainer)
        if trainer.is_global_zero and self.clock.done > 0:
            print(f"{self.label}: starting ({self.clock.left()})", file=sys.stderr, flush=True)

    def on_train_end(self, trainer, pl_module):
        self.clock.done += trainer.global_step - self.step0


class EpochLines(L.Callback):
    """One line per epoch on stderr (rank 0): what a log wants instead of a progress bar,
    with the time this run has left at the pace so far (at most that, when it may stop
    early), and its stage's when it is one run of several (`StageClock`)."""

    def __init__(self, label: str, clock: StageClock | None = None):
        self.label, self.t0, self.step0, self.clock = label, 0.0, 0, clock

    def on_train_start(self, trainer, pl_module):
        self.t0, self.step0 = time.perf_counter(), trainer.global_step  # a resumed run counts from here

    def left(self, trainer) -> str:
        done = trainer.global_step - self.step0
        try:
            total = int(trainer.estimated_stepping_batches)
        except Exception:  # an iterable of unknown length: no estimate
            return ""
        if done <= 0 or not 0 < total < 10**12:
            return ""
        secs = (time.perf_counter() - self.t0) / done * max(0, total - trainer.global_step)
        stage = f"; {self.clock.left(done)}" if self.clock is not None else ""
        return f", {'at most ' if self.auto(trainer) else ''}~{secs:.0f} s left{stage}"

    @staticmethod
    def auto(trainer) -> bool:
        return any(isinstance(c, EarlyStopping) for c in trainer.callbacks)

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            m = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
            vals = ", ".join(f"{k} {v:.4g}" for k, v in sorted(m.items()))
            total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
            if self.auto(trainer):
                total = f"<={total} (auto)"
            print(
                f"{self.label}: epoch {trainer.current_epoch + 1}/{total}, step {trainer.global_step}"
                f"{', ' + vals if vals else ''} ({time.perf_counter() - self.t0:.0f} s{self.left(trainer)})",
                file=sys.stderr,
                flush=True,
            )


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
