"""`adapt`: fit a model to a new task with a small stored delta; `adapt.apply`, `adapt.ls`."""

from __future__ import annotations

from pathlib import Path

from learngene.api._common import _targs
from learngene.core.errors import UserError
from learngene.zoo import resolve


def adapt(
    model: str,
    *,
    data,
    name: str,
    pool="pools/embedded",
    method: str = "lora",
    rank: int = 8,
    targets="qkv,proj,fc1,fc2",
    train_head: bool = False,
    epochs=10,
    lr: float | None = None,
    fraction: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
    force: bool = False,
    checkpoint=None,
    trainer_args=None,
    progress: bool = True,
) -> dict:
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

    adapters = tasks.adapters_for(model, pool)
    tasks.check_request(name=name, method=method, lr=lr, rank=rank, adapters=adapters, force=force)
    member = resolve(model, pool=pool, checkpoint=checkpoint, progress=False)
    return tasks.adapt(
        member.load(),
        data,
        name=name,
        adapters=adapters,
        ref=tasks.base_ref(model, member),
        method=method,
        rank=rank,
        targets=targets,
        train_head=train_head,
        epochs=epochs,
        lr=lr,
        train_fraction=fraction,
        seed=seed,
        force=force,
        trainer_args=_targs(trainer_args, "adapt", progress),
        progress=progress,
        batch_size=batch_size,
    )


def apply_delta(
    model: str,
    delta: str,
    *,
    pool="pools/embedded",
    merge: bool = False,
    out=None,
    data=None,
    force: bool = False,
    checkpoint=None,
) -> dict:
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

    if out and not merge:
        raise UserError("adapt apply: --out writes a merged model; add --merge")
    adapters = tasks.adapters_for(model, pool)
    if out:
        check_output(out, force)
    folder = tasks.resolve_delta(delta, adapters)
    read_meta(folder)  # a broken delta is refused before the base is loaded
    base = resolve(model, pool=pool, checkpoint=checkpoint, progress=False).load()
    merged, ad = tasks.apply(base, folder, merge=merge)
    dm = data_for(data or ad.meta.get("data"), base.data_config, augment=False)
    acc = evaluate(merged, dm.test_dataloader())
    res = {
        "task": ad.meta.get("task"),
        "method": ad.method,
        "data": dm.name,
        "test_top1": round(acc["top1"], 2),
        "merged": merge,
    }
    if merge:
        res["merge_max_logit_diff"] = tasks.max_diff(ad.model, merged, input_size(base.model))
        if out:
            res["out"] = str(tasks.export_merged(merged, ad, base, Path(out), force))
    return res


def list_deltas(pool="pools/embedded") -> list[dict]:
    """One row per delta stored in ``POOL/adapters`` (its task, method, base, accuracy, size)."""
    from learngene.deltas import tasks

    return tasks.ls(Path(pool) / "adapters")


adapt.apply = apply_delta
adapt.ls = list_deltas
