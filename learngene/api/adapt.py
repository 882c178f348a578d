"""`adapt`: fit a model to a new task with a small stored delta; `adapt.apply`, `adapt.ls`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from learngene.api._common import Request, _targs, verb
from learngene.core.errors import UserError
from learngene.zoo import resolve

if TYPE_CHECKING:
    from learngene.core.training import TrainerArgs
    from learngene.pool.store import Pool


@dataclass(frozen=True)
class AdaptRequest(Request):
    model: str
    _: KW_ONLY
    data: str | Path
    name: str
    pool: str | Path | Pool = "pools/embedded"
    method: str = "lora"
    rank: int = 8
    targets: str | Sequence = "qkv,proj,fc1,fc2"
    train_head: bool = False
    epochs: int | str | None = 10
    lr: float | None = None
    fraction: float = 1.0
    seed: int = 0
    batch_size: int = 64
    force: bool = False
    checkpoint: str | Path | None = None
    trainer_args: TrainerArgs | None = None
    progress: bool = True
    adapters: Path | None = field(default=None, init=False)  # where the delta goes

    def check(self):
        from learngene.deltas import tasks

        self._set("adapters", tasks.adapters_for(self.model, self.pool))
        lr = tasks.check_request(
            name=self.name, method=self.method, lr=self.lr, rank=self.rank, adapters=self.adapters, force=self.force
        )
        self._set("lr", lr)


@verb(AdaptRequest)
def adapt(r: AdaptRequest) -> dict:
    """Fit a model to a new task with a small stored delta (LoRA through PEFT, or a bottleneck
    adapter); the delta is stored as ``POOL/adapters/<name>`` (the pool the model belongs to).

    Args:
        model: a child or member of the pool, a timm local-dir, ``embedded``, or a timm name.
        data: the new task (a folder, or ``digits:rot90``).
        name: the task's name (the delta's folder).
        method, rank, targets, train_head: the delta (``lora`` / ``adapter``, its rank, the
            block linears it adapts, whether the classifier trains too).
        epochs, lr, fraction, seed, batch_size: its training (``epochs="auto"``: until
            validation stops improving; ``lr`` default per method).

    Returns the delta's record (test top1, trainable params, bytes, where it is).
    ``adapt.apply(model, delta, ...)`` applies or merges one; ``adapt.ls(pool)`` lists them.
    """
    from learngene.deltas import tasks

    member = resolve(r.model, pool=r.pool, checkpoint=r.checkpoint, progress=False)
    return tasks.adapt(
        member.load(),
        r.data,
        name=r.name,
        adapters=r.adapters,
        ref=tasks.base_ref(r.model, member),
        method=r.method,
        rank=r.rank,
        targets=r.targets,
        train_head=r.train_head,
        epochs=r.epochs,
        lr=r.lr,
        train_fraction=r.fraction,
        seed=r.seed,
        force=r.force,
        trainer_args=_targs(r.trainer_args, "adapt", r.progress),
        progress=r.progress,
        batch_size=r.batch_size,
    )


@dataclass(frozen=True)
class ApplyDeltaRequest(Request):
    model: str
    delta: str
    _: KW_ONLY
    pool: str | Path | Pool = "pools/embedded"
    merge: bool = False
    out: str | Path | None = None
    data: str | Path | None = None
    force: bool = False
    checkpoint: str | Path | None = None

    def check(self):
        if self.out and not self.merge:
            raise UserError("adapt apply: --out writes a merged model; add --merge")


@verb(ApplyDeltaRequest)
def apply_delta(r: ApplyDeltaRequest) -> dict:
    """Apply a stored delta to its base (``merge``: fold a LoRA delta into the weights, written
    to ``out`` as a timm local-dir) and measure it on its task's test split.

    Args:
        model: the base the delta was trained on.
        delta: a task of the pool, or a delta folder.
        merge, out, force: fold it in, write the merged model there, replace that folder.
        data: the data to measure on (default: the delta's task).
    """
    from learngene.core.data import data_for
    from learngene.core.evaluation import evaluate
    from learngene.core.io import check_output
    from learngene.core.vit import input_size
    from learngene.deltas import tasks
    from learngene.deltas.delta import read_meta

    adapters = tasks.adapters_for(r.model, r.pool)
    if r.out:
        check_output(r.out, r.force)
    folder = tasks.resolve_delta(r.delta, adapters)
    read_meta(folder)  # a broken delta is refused before the base is loaded
    base = resolve(r.model, pool=r.pool, checkpoint=r.checkpoint, progress=False).load()
    merged, ad = tasks.apply(base, folder, merge=r.merge)
    dm = data_for(r.data or ad.meta.get("data"), base.data_config, augment=False)
    acc = evaluate(merged, dm.test_dataloader())
    res = {
        "task": ad.meta.get("task"),
        "method": ad.method,
        "data": dm.name,
        "test_top1": round(acc["top1"], 2),
        "merged": r.merge,
    }
    if r.merge:
        res["merge_max_logit_diff"] = tasks.max_diff(ad.model, merged, input_size(base.model))
        if r.out:
            res["out"] = str(tasks.export_merged(merged, ad, base, Path(r.out), r.force))
    return res


@dataclass(frozen=True)
class ListDeltasRequest(Request):
    pool: str | Path | Pool = "pools/embedded"


@verb(ListDeltasRequest)
def list_deltas(r: ListDeltasRequest) -> list[dict]:
    """One row per delta stored in ``POOL/adapters`` (its task, method, base, accuracy, size)."""
    from learngene.deltas import tasks

    return tasks.ls(Path(r.pool) / "adapters")


adapt.apply = apply_delta
adapt.ls = list_deltas
