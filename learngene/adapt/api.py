"""`learngene adapt`: train a small delta for a new task, store it beside the pool, apply /
merge / roll it back, list what a pool has.

Models (``--model``): a child of the pool by id (``stitch-4-6``: POOL/children/<id>), a timm
local-dir (``local-dir:DIR`` or ``DIR``), ``embedded`` (the embedded ancestor), or a timm
name with ``--checkpoint``. Deltas live in ``POOL/adapters/<TASK>/``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from learngene.adapt import delta as D
from learngene.errors import UserError


@dataclass
class Base:
    model: nn.Module
    spec: str
    checksum: str
    data_config: dict


def load_base(spec: str, pool: str | Path = "pools/embedded", checkpoint: str | None = None) -> Base:
    import timm

    import learngene.assemble.model  # noqa: F401  registers the stitched children with timm
    from learngene.ancestry import EMBEDDED, embedded_ancestor, load_timm, state_dict_sha256

    if spec == EMBEDDED:
        anc = embedded_ancestor(progress=False)
        model, cfg = anc.model, anc.data_config
    else:
        child = Path(pool) / "children" / spec
        folder = child if (child / "config.json").is_file() else Path(spec.removeprefix("local-dir:"))
        if (folder / "config.json").is_file():
            try:
                model = timm.create_model(f"local-dir:{folder}", pretrained=True)
            except Exception as e:
                raise UserError(f"cannot load model folder {folder}: {type(e).__name__}: {str(e).splitlines()[0][:160]}") from None
            if checkpoint:
                raise UserError("--checkpoint is for a timm name, not a model folder")
            cfg = dict(model.pretrained_cfg)
            spec = str(folder)
        elif spec.startswith("local-dir:") or Path(spec).exists():
            raise UserError(f"not a model folder (no config.json): {folder}")
        else:
            anc = load_timm(spec, checkpoint=checkpoint)
            model, cfg = anc.model, anc.data_config
    if not hasattr(model, "blocks") or not hasattr(model, "head"):
        raise UserError(f"{spec} is not a timm ViT")
    model.eval()
    return Base(model, spec, state_dict_sha256(model.state_dict()), cfg)


def data_for(base: Base, data: str | None, batch_size: int = 64, train_fraction: float = 1.0, seed: int = 0):
    from timm.data import resolve_data_config

    from learngene.data import EMBEDDED, LearngeneDataModule, digits_data_config

    embedded = data is None or data == EMBEDDED or str(data).startswith(EMBEDDED + ":")
    img = int(base.model.patch_embed.img_size[0])
    cfg = digits_data_config(img) if embedded else resolve_data_config({}, model=base.model)
    return LearngeneDataModule(data, data_config=cfg, batch_size=batch_size, train_fraction=train_fraction, seed=seed)


def train(model: nn.Module, dm, epochs: int, lr: float, progress: bool = False, trainer_args=None) -> float:
    """Lightning fit of the parameters that require grad (with a delta attached, the base is
    frozen); seconds."""
    from learngene.training import Classifier, OptimConfig, TrainerArgs, make_trainer

    if epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}")
    targs = trainer_args or TrainerArgs(progress=progress)
    targs.max_epochs = epochs
    module = Classifier(model, OptimConfig(lr=lr, weight_decay=0.0, warmup_fraction=0.1, label_smoothing=0.1))
    t0 = time.perf_counter()
    make_trainer(targs).fit(module, datamodule=dm)
    model.eval()
    return time.perf_counter() - t0


def model_bytes(model: nn.Module) -> int:
    return D.bytes_of(model.state_dict())


# Default peak learning rates, from benchmarks/adapt.py's grids (results/adapt.md): LoRA 3e-3 was
# picked on the ancestor and on the child with 10% of the data (1e-2 sends the 12-block ancestor
# to chance), the adapter's zero-initialised bottleneck wants a larger step.
DEFAULT_LR = {"lora": 3e-3, "adapter": 1e-2}


def adapters_dir(pool: str | Path) -> Path:
    return Path(pool) / "adapters"


def adapt(model: str, data: str | None, name: str, method: str = "lora", rank: int = 8, targets=D.TARGETS,
          train_head: bool = False, epochs: int = 10, lr: float | None = None, pool: str | Path = "pools/embedded",
          train_fraction: float = 1.0, seed: int = 0, force: bool = False, checkpoint: str | None = None,
          trainer_args=None, progress: bool = False) -> dict:
    """Train and store a delta; returns its record (what ``adapt ls`` shows)."""
    import lightning as L

    from learngene import paths
    from learngene.training import evaluate

    D.check_name(name)
    out = adapters_dir(pool) / name
    if out.exists() and not force:
        raise UserError(f"delta exists: {out} (pass --force to replace it)")
    if method == "lora":
        D.peft()  # a missing extra fails now, not after loading and training
    if method not in D.METHODS:  # before the base is loaded
        raise UserError(f"unknown adapt method {method!r} (choose from {', '.join(D.METHODS)})")
    lr = DEFAULT_LR[method] if lr is None else lr
    if lr <= 0:
        raise UserError(f"--lr must be > 0, got {lr}")
    base = load_base(model, pool, checkpoint)
    dm = data_for(base, data, train_fraction=train_fraction, seed=seed)
    L.seed_everything(seed, verbose=False)
    ad = D.attach(base.model, method, rank, targets, train_head, dm.num_classes, seed=seed)
    seconds = train(ad.model, dm, epochs, lr, progress, trainer_args)
    test = evaluate(ad.model, dm.test_dataloader())
    val = evaluate(ad.model, dm.val_dataloader())
    sd = D.delta_state(ad)
    meta = {
        "task": name, "base": base.spec, "base_checksum": base.checksum, "data": dm.name,
        "train_fraction": train_fraction, "epochs": epochs, "lr": lr, "seed": seed,
        "test_top1": round(test["top1"], 2), "val_top1": round(val["top1"], 2),
        "trainable_params": ad.trainable, "delta_bytes": D.bytes_of(sd), "model_bytes": model_bytes(base.model),
        "seconds": round(seconds, 1), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    meta["delta_fraction"] = round(meta["delta_bytes"] / meta["model_bytes"], 4)
    adapters_dir(pool).mkdir(parents=True, exist_ok=True)
    with paths.staged_folder(out) as tmp:
        D.save(ad, tmp, meta)
    return {**meta, "method": method, "r": rank, "path": str(out)}


def resolve_delta(delta: str, pool: str | Path) -> Path:
    p = Path(delta)
    if (p / D.META).is_file() or p.exists():
        return p
    named = adapters_dir(pool) / delta
    if named.exists():
        return named
    raise UserError(f"no delta {delta!r}: neither a folder nor a task in {adapters_dir(pool)}")


def apply(model: str, delta: str, pool: str | Path = "pools/embedded", merge: bool = False, checkpoint: str | None = None):
    """(adapted or merged model, Adapted, Base)."""
    base = load_base(model, pool, checkpoint)
    ad = D.load(base.model, resolve_delta(delta, pool), base.checksum)
    return (D.merge(ad) if merge else ad.model), ad, base


def max_diff(a: nn.Module, b: nn.Module, img_size: int, n: int = 8) -> float:
    x = torch.randn(n, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((a.eval()(x) - b.eval()(x)).abs().max())


def export_merged(merged: nn.Module, ad: D.Adapted, base: Base, out: Path, force: bool = False) -> Path:
    """The merged model as a timm local-dir folder (plain timm loads it)."""
    from learngene.ancestry import save_local_dir
    from learngene.assemble.export import check_child_dir

    check_child_dir(out, force)
    cfg = dict(base.model.pretrained_cfg)
    arch = cfg.get("architecture") or type(base.model).__name__
    args_file = Path(base.spec) / "config.json"
    args = json.loads(args_file.read_text()).get("model_args", {}) if args_file.is_file() else {}
    if not args:
        from learngene.grow.api import shape_args

        args = shape_args(base.model)
    args = {**args, "num_classes": ad.config["num_classes"]}
    meta = {"adapted_from": base.spec, "task": ad.meta.get("task"), "delta_sha256": ad.meta.get("delta_sha256"),
            "test_top1": ad.meta.get("test_top1")}
    cfg = json.loads(json.dumps(cfg, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o)))
    return save_local_dir(merged, out, arch, args, {**cfg, "num_classes": ad.config["num_classes"]}, extra=meta)


def ls(pool: str | Path = "pools/embedded") -> list[dict]:
    rows = []
    for meta_file in sorted(adapters_dir(pool).glob(f"*/{D.META}")):
        try:
            m = json.loads(meta_file.read_text())
        except json.JSONDecodeError:
            rows.append({"task": meta_file.parent.name, "method": "?", "note": "corrupt learngene.json"})
            continue
        rows.append({k: m.get(k) for k in ("task", "method", "r", "base", "data", "test_top1", "trainable_params",
                                           "delta_bytes", "delta_fraction", "created")})
    return rows
