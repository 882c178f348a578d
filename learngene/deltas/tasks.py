"""`learngene adapt`: train a small delta for a new task, store it beside the pool, apply /
merge / roll it back, list what a pool has, and hand the deltas to the zoo as members.

The base is a `LoadedModel` (``learngene.zoo.resolve`` turns ``--model`` into one). A delta
of a pool's member is written to that pool's ``adapters/<TASK>/``; the base is recorded as a
reference that resolves from anywhere (the member's id for a pool member, an absolute path
for a folder or checkpoint, ``embedded``, a timm name).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn

from learngene.core.convergence import Convergence
from learngene.core.errors import UserError
from learngene.core.io import check_output, real_folder, staged_folder
from learngene.core.localdir import save_local_dir
from learngene.core.processes import lock
from learngene.deltas import delta as D
from learngene.models.loading import LoadedModel


def base_ref(ref: str, member) -> dict:
    """How a delta records its base (a `learngene.zoo.Member`) so that it resolves from any
    working directory: a pool member by its id (the delta lives in that pool), a folder or
    checkpoint by its absolute path, else the reference as given."""
    if member.provenance.get("pool") and member.kind in ("child", "narrow", "wide", "stitch"):
        return {"base": member.id.removeprefix("child:"), "base_in_pool": True}
    src = str(member.provenance.get("source", ref))
    if src.startswith("local-dir:"):
        return {"base": f"local-dir:{Path(src.split(':', 1)[1]).resolve()}", "base_in_pool": False}
    if src.startswith("checkpoint:"):
        return {"base": ref, "base_checkpoint": str(Path(src.split(":", 1)[1]).resolve()), "base_in_pool": False}
    return {"base": ref, "base_in_pool": False}


def adapters_for(ref: str, pool) -> Path:
    """Where a delta of this base is stored: beside the pool the base belongs to (a pool
    member, or a folder under POOL/children/), else in ``pool``'s adapters/."""
    from learngene.models.refs import parse_ref

    r = parse_ref(ref, pool=pool)
    if r.kind == "pool":
        return Path(r.target) / "adapters"
    if r.kind == "local-dir":
        folder = Path(r.target).expanduser().resolve()
        if folder.parent.name == "children" and (folder.parent.parent / "pool.json").is_file():
            return folder.parent.parent / "adapters"
    return Path(pool) / "adapters"


# --epochs auto for a delta: at most 100 epochs, stopped 10 after the best validation top1
ADAPT_AUTO = Convergence(cap=100, patience=10)


def train(model: nn.Module, dm, epochs, lr: float, progress: bool = False, trainer_args=None) -> tuple[float, dict]:
    """Lightning fit of the parameters that require grad (with a delta attached, the base is
    frozen) for ``epochs`` (or ``"auto"``); (seconds, the training record)."""
    from learngene.core.limits import epochs as bounded
    from learngene.core.training import Classifier, OptimConfig, TrainerArgs, fit

    epochs = bounded(epochs)
    targs = trainer_args or TrainerArgs(progress=progress)
    targs.label = "adapt"
    module = Classifier(model, OptimConfig(lr=lr, weight_decay=0.0, warmup_fraction=0.1, label_smoothing=0.1))
    t0 = time.perf_counter()
    record, _ = fit(module, dm, targs, epochs=epochs, auto=ADAPT_AUTO)
    model.eval()
    return time.perf_counter() - t0, record


def model_bytes(model: nn.Module) -> int:
    return D.bytes_of(model.state_dict())


def check_request(*, name: str, method: str, lr: float | None, rank: int, adapters: Path, force: bool) -> float:
    """Everything about a delta request that can be refused before any model is loaded;
    returns the learning rate (the method's default when none is given)."""
    from learngene.core import limits

    D.check_name(name)
    kind = D.method_of(method)
    limits.int_in(rank, "--rank", 1, limits.MAX_RANK)
    real_folder(adapters, "adapters folder")
    check_output(adapters / name, force, "delta")
    kind.check()
    lr = kind.default_lr if lr is None else lr
    if lr <= 0:
        raise UserError(f"--lr must be > 0, got {lr:g}")
    return lr


def adapt(
    base: LoadedModel,
    data,
    *,
    name: str,
    adapters: Path,
    ref: dict,
    method: str = "lora",
    rank: int = 8,
    targets=D.TARGETS,
    train_head: bool = False,
    epochs: int = 10,
    lr: float | None = None,
    train_fraction: float = 1.0,
    seed: int = 0,
    force: bool = False,
    trainer_args=None,
    progress: bool = False,
    batch_size: int = 64,
) -> dict:
    """Train and store a delta in ``adapters/<name>``; returns its record (what ``adapt ls`` shows).
    One writer of a delta at a time, from the check to the write: a second run of the same
    name is refused at once instead of silently replacing the first one's delta."""
    from learngene.core import limits
    from learngene.core.data import data_for

    lr = check_request(name=name, method=method, lr=lr, rank=rank, adapters=adapters, force=force)
    limits.epochs(epochs)
    limits.seed(seed)
    dm = data_for(
        data, base.data_config, train_fraction=train_fraction, seed=seed, batch_size=limits.batch_size(batch_size)
    )  # bad data: refused before the lock
    with lock(adapters / f".{name}.lock", f"delta {adapters / name}", wait=False):
        check_output(adapters / name, force, "delta")  # again, now that it is ours
        return _fit(
            base,
            dm,
            name=name,
            adapters=adapters,
            ref=ref,
            method=method,
            rank=rank,
            targets=targets,
            train_head=train_head,
            epochs=epochs,
            lr=lr,
            train_fraction=train_fraction,
            seed=seed,
            force=force,
            trainer_args=trainer_args,
            progress=progress,
        )


def _fit(
    base,
    dm,
    *,
    name,
    adapters,
    ref,
    method,
    rank,
    targets,
    train_head,
    epochs,
    lr,
    train_fraction,
    seed,
    force,
    trainer_args,
    progress,
) -> dict:
    import lightning as L

    from learngene.core.evaluation import evaluate

    L.seed_everything(seed, verbose=False)
    ad = D.attach(base.model, method, rank, targets, train_head, dm.num_classes, seed=seed)
    seconds, record = train(ad.model, dm, epochs, lr, progress, trainer_args)
    test = evaluate(ad.model, dm.test_dataloader())
    val = evaluate(ad.model, dm.val_dataloader())
    sd = D.delta_state(ad)
    meta = {
        "task": name,
        **ref,
        "base_checksum": base.checksum,
        "data": dm.name,
        "data_fingerprint": dm.fingerprint(),
        "train_fraction": train_fraction,
        "epochs": epochs,
        "lr": lr,
        "seed": seed,
        "test_top1": round(test["top1"], 2),
        "val_top1": round(val["top1"], 2),
        "trainable_params": ad.trainable,
        "delta_bytes": D.bytes_of(sd),
        "model_bytes": model_bytes(base.model),
        "seconds": round(seconds, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "training": {k: v for k, v in record.items()},
    }
    meta["delta_fraction"] = round(meta["delta_bytes"] / meta["model_bytes"], 4)
    out = adapters / name
    with staged_folder(out, replace=force) as tmp:
        D.save(ad, tmp, meta)
    return {**meta, "method": method, "r": rank, "path": str(out)}


def resolve_delta(delta: str, adapters: Path) -> Path:
    """A delta folder, or the name of one in ``adapters``."""
    p = Path(delta)
    if (p / D.META).is_file():
        return p
    if "/" not in delta and not p.exists() and (adapters / D.check_name(delta)).is_dir():
        return adapters / delta
    raise UserError(f"no delta {delta!r}: neither a delta folder nor a task in {adapters}")


def apply(base: LoadedModel, folder: Path, merge: bool = False):
    """(adapted or merged model, Adapted)."""
    ad = D.load(base.model, folder, base.checksum)
    return (D.merge(ad) if merge else ad.model), ad


def max_diff(a: nn.Module, b: nn.Module, img_size: int, n: int = 8) -> float:
    x = torch.randn(n, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((a.eval()(x) - b.eval()(x)).abs().max())


def export_merged(merged: nn.Module, ad: D.Adapted, base: LoadedModel, out: Path, force: bool = False) -> Path:
    """The merged model as a timm local-dir folder (plain timm loads it)."""
    check_output(out, force)
    args = {**base.model_args, "num_classes": ad.config["num_classes"]}
    meta = {
        "adapted_from": ad.meta.get("base"),
        "task": ad.meta.get("task"),
        "delta_sha256": ad.meta.get("delta_sha256"),
        "test_top1": ad.meta.get("test_top1"),
        "base_checksum": base.checksum,
    }
    return save_local_dir(
        merged,
        out,
        base.architecture,
        args,
        {**base.pretrained_cfg, "num_classes": ad.config["num_classes"]},
        extra=meta,
    )


def ls(adapters: Path) -> list[dict]:
    """One row per delta folder (the folder's name is the task)."""
    rows = []
    for folder in sorted(p for p in Path(adapters).glob("*") if p.is_dir() and not p.name.startswith(".")):
        try:
            m = D.read_meta(folder)
        except UserError as e:
            rows.append({"task": folder.name, "method": "?", "note": str(e)})
            continue
        rows.append(
            {
                "task": folder.name,
                **{
                    k: m.get(k)
                    for k in (
                        "method",
                        "r",
                        "base",
                        "data",
                        "test_top1",
                        "trainable_params",
                        "delta_bytes",
                        "delta_fraction",
                        "created",
                    )
                },
            }
        )
    return rows


def members(pool, resolve) -> list:
    """Every stored delta of a pool as a zoo member, in the form it ships in (LoRA merged
    into the weights, an adapter applied), measured on its own task. ``resolve(ref, pool,
    checkpoint)`` loads a base (learngene.zoo.resolve)."""
    from learngene.zoo import Member

    out = []
    for folder in sorted(p for p in pool.adapters_dir.glob("*") if p.is_dir() and not p.name.startswith(".")):
        meta = D.read_meta(folder)
        base = resolve(
            meta["base"], pool=pool.path if meta.get("base_in_pool") else None, checkpoint=meta.get("base_checkpoint")
        ).load()
        model, ad = apply(base, folder, merge=D.method_of(meta["method"]).mergeable)
        args = {**base.model_args, "num_classes": ad.config["num_classes"]}
        out.append(
            Member(
                f"adapted:{folder.name}",
                "adapted",
                lambda m=model: m,
                base.architecture,
                args,
                dict(base.data_config),
                accuracy={"test_top1": meta.get("test_top1"), "val_top1": meta.get("val_top1")},
                provenance={"source": str(folder), "base": meta["base"], "delta_sha256": meta["delta_sha256"]},
                task=meta["data"],
                _model=model.eval(),
            )
        )
    return out
