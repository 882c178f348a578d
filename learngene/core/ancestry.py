"""The embedded ancestors: a DeiT-architecture ViT scaled to a 2-core CPU, trained on an
embedded testbed (``embedded``: the digits; ``embedded:animals``) and cached under
``$LEARNGENE_HOME/ancestors/embedded[-NAME]`` as a timm local-dir, so plain
``timm.create_model('local-dir:...', pretrained=True)`` loads it too. Ancestors fitted to a
user's folder (`fit_ancestor`) live beside them."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from learngene.core.errors import UserError
from learngene.core.io import home, save_local_dir
from learngene.core.loading import LoadedModel, load_timm

EMBEDDED = "embedded"

# The embedded ancestor: DeiT-Ti's architecture (timm's deit_tiny_patch16_224 entry point)
# with the sizes overridden for 16x16 digits. Width 128 / 4 heads: the calibration saw
# width 192 gain nothing for 2.2x the time.
EMBEDDED_ARCH = "deit_tiny_patch16_224"
EMBEDDED_MODEL_ARGS = dict(img_size=16, patch_size=4, embed_dim=128, depth=12, num_heads=4, num_classes=10)
# Training recipe; part of the cache key, so changing it retrains.
EMBEDDED_RECIPE = dict(epochs=30, lr=1e-3, weight_decay=0.05, warmup_fraction=0.1, label_smoothing=0.1, batch_size=64, seed=0)


@dataclass(frozen=True)
class Testbed:
    """An embedded ancestor: the embedded data source it is trained on, and how."""

    data: str  # a scheme of learngene.core.data.DATA_SOURCES
    model_args: dict
    recipe: dict


# ``embedded`` is the digits' ancestor (the main job and the tests); ``embedded:NAME`` the
# others. The animals take the digits' architecture and recipe unchanged, at the same 16 px:
# there the recipe reaches ~87% and the narrow auxiliary alone ~79% (a slope, which the
# saturated digits lack), and an epoch costs ~2.5 digits epochs (benchmarks/compare_methods.py).
TESTBEDS = {
    "digits": Testbed("digits", EMBEDDED_MODEL_ARGS, EMBEDDED_RECIPE),
    "animals": Testbed("animals", EMBEDDED_MODEL_ARGS, EMBEDDED_RECIPE),  # 300 silhouettes per class
}
DEFAULT_TESTBED = "digits"


def testbed(name: str | None) -> Testbed:
    if name not in TESTBEDS and name is not None:
        raise UserError(f"unknown embedded ancestor {EMBEDDED}:{name} (known: {EMBEDDED}, "
                        + ", ".join(f"{EMBEDDED}:{t}" for t in TESTBEDS if t != DEFAULT_TESTBED) + ")")
    return TESTBEDS[name or DEFAULT_TESTBED]


def ancestor_name(name: str | None) -> str:
    """The reference that loads this testbed's ancestor: ``embedded`` or ``embedded:NAME``."""
    return EMBEDDED if (name or DEFAULT_TESTBED) == DEFAULT_TESTBED else f"{EMBEDDED}:{name}"


def embedded_dir(name: str | None = None) -> Path:
    return home() / "ancestors" / ancestor_name(name).replace(":", "-")


def _recipe(epochs: int | None = None, seed: int | None = None, name: str | None = None) -> dict:
    r = dict(testbed(name).recipe)
    if epochs is not None:
        if epochs < 1:
            raise UserError(f"--epochs must be >= 1, got {epochs}")
        r["epochs"] = epochs
    if seed is not None:
        r["seed"] = seed
    return r


def _recipe_key(recipe: dict, name: str | None = None) -> str:
    from learngene.core.sources import DIGITS_IMG_SIZE, DIGITS_SPLIT_SEED

    tb = testbed(name)
    what = [EMBEDDED_ARCH, tb.model_args, recipe, DIGITS_SPLIT_SEED, DIGITS_IMG_SIZE]
    if tb.data != "digits":  # the digits' key is the one their caches were made under
        from learngene.core.data import open_source

        what.append(open_source(tb.data).fingerprint())
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def train_embedded(
    folder: Path | None = None,
    progress: bool = True,
    epochs: int | None = None,
    trainer_args=None,
    seed: int | None = None,
    name: str | None = None,
) -> LoadedModel:
    """Train an embedded ancestor (``name``: a testbed, default the digits) on its embedded
    data and cache it as a timm local-dir."""
    import lightning as L
    import timm

    from learngene.core.data import LearngeneDataModule
    from learngene.core.training import Classifier, OptimConfig, TrainerArgs, evaluate, make_trainer

    from learngene.core.io import check_output

    folder = Path(folder) if folder else embedded_dir(name)
    check_output(folder, True, "the embedded ancestor's cache", cache=True)  # an unwritable cache is refused before training
    tb, r = testbed(name), _recipe(epochs, seed, name)
    L.seed_everything(r["seed"], verbose=False)
    dm = LearngeneDataModule(tb.data, batch_size=r["batch_size"], seed=r["seed"])
    data_cfg = dm.data_config
    model = timm.create_model(EMBEDDED_ARCH, **tb.model_args)
    optim = OptimConfig(lr=r["lr"], weight_decay=r["weight_decay"], warmup_fraction=r["warmup_fraction"], label_smoothing=r["label_smoothing"])
    import sys

    tty = sys.stderr.isatty()
    targs = trainer_args or TrainerArgs(progress=progress and tty, log_lines=progress and not tty)
    targs.max_epochs, targs.progress = r["epochs"], progress and targs.progress
    targs.label = f"ancestor ({ancestor_name(name)})"
    t0 = time.perf_counter()
    make_trainer(targs).fit(Classifier(model, optim), datamodule=dm)
    wall = time.perf_counter() - t0
    model = model.cpu().eval()
    test = evaluate(model, dm.test_dataloader())
    val = evaluate(model, dm.val_dataloader())
    metrics = {
        "test_top1": round(test["top1"], 2),
        "test_top5": round(test["top5"], 2),
        "val_top1": round(val["top1"], 2),
        "train_seconds": round(wall, 1),
        "epochs": r["epochs"],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    pretrained_cfg = {
        "architecture": EMBEDDED_ARCH,
        "num_classes": 10,
        "input_size": list(data_cfg["input_size"]),
        "interpolation": data_cfg["interpolation"],
        "mean": list(data_cfg["mean"]),
        "std": list(data_cfg["std"]),
        "crop_pct": data_cfg["crop_pct"],
        "crop_mode": data_cfg["crop_mode"],
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "label_names": list(dm.classes),
    }
    extra = {"recipe": r, "recipe_key": _recipe_key(r, name), "data": dm.fingerprint(), "metrics": metrics}
    save_local_dir(model, folder, EMBEDDED_ARCH, tb.model_args, pretrained_cfg, extra)
    return _load_embedded(folder, name)


def _load_embedded(folder: Path, name: str | None = None) -> LoadedModel:
    anc = load_timm(f"local-dir:{folder}")
    meta = json.loads((folder / "config.json").read_text()).get("learngene", {})
    anc.name, anc.source = ancestor_name(name), f"embedded:{folder}"
    anc.metrics = dict(meta.get("metrics", {}))
    return anc


def embedded_ancestor(
    retrain: bool = False,
    progress: bool = True,
    folder: Path | None = None,
    trainer_args=None,
    epochs: int | None = None,
    seed: int | None = None,
    name: str | None = None,
) -> LoadedModel:
    """The cached embedded ancestor (of testbed ``name``, default the digits); trained when
    missing, stale (another recipe, e.g. other epochs) or asked."""
    folder = Path(folder) if folder else embedded_dir(name)
    cfg_file = folder / "config.json"
    if not retrain and cfg_file.is_file() and (folder / "model.safetensors").is_file():
        try:
            meta = json.loads(cfg_file.read_text()).get("learngene", {})
        except json.JSONDecodeError:
            meta = {}
        if meta.get("recipe_key") == _recipe_key(_recipe(epochs, seed, name), name):
            return _load_embedded(folder, name)
    return train_embedded(folder, progress=progress, epochs=epochs, trainer_args=trainer_args, seed=seed, name=name)


def describe(anc: LoadedModel, data=None) -> dict:
    """The facts `learngene ancestor` prints; with ``data``, its accuracy on that data's test
    split. For a folder, the ancestor described is the one that reads it (`ancestor_for`: the
    one fitted to its classes, once `ancestor --fine-tune` made it), as build-pool would take."""
    if data:
        from learngene.core.data import data_for
        from learngene.core.training import evaluate

        dm = data_for(data, anc.data_config, augment=False)
        if not dm.embedded:
            anc = ancestor_for(anc, dm)
            dm.for_model(anc.data_config)
        info = anc.info()
        if dm.num_classes != info["num_classes"]:
            raise UserError(f"{dm.name} has {dm.num_classes} classes but the ancestor's head has {info['num_classes']}")
        acc = evaluate(anc.model, dm.test_dataloader())
        info.update({"data": dm.name, "data_top1": round(acc["top1"], 2), "data_top5": round(acc["top5"], 2)})
        return info
    return anc.info()


# --------------------------------------------------------------------------- fitted ancestors

# DeiT's fine-tuning recipe, scaled down to a user's folder: AdamW (wd 0.05), 10% warm-up then
# cosine, label smoothing 0.1, DeiT's RandAugment on the images (the ImageFolder training
# transform), batch 64; the new head (random, the data's classes) at 10x the learning rate of
# the inherited backbone, as assemble treats inherited weights. No mixup / cutmix: few epochs
# on small data. Part of the cache key, so changing it refits.
FIT_RECIPE = dict(epochs=10, lr=1e-4, head_lr=1e-3, weight_decay=0.05, warmup_fraction=0.1, label_smoothing=0.1,
                  batch_size=64, seed=0)


def fitted_root() -> Path:
    return home() / "ancestors" / "fitted"


def _fit_key(base: LoadedModel, fingerprint: dict, recipe: dict) -> str:
    blob = json.dumps([base.checksum, {k: fingerprint.get(k) for k in ("classes", "counts", "files")}, recipe], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _probe_top1(model, dm) -> float:
    """DINO's kNN probe (k=20) of the model's features: what a head-less comparison can say."""
    from learngene.core.training import features_and_logits, knn_top1

    tr_f, _, tr_y = features_and_logits(model, dm.eval_loader("train"), torch.device("cpu"))
    te_f, _, te_y = features_and_logits(model, dm.eval_loader("test"), torch.device("cpu"))
    return knn_top1(tr_f, tr_y, te_f, te_y)


def fit_ancestor(base: LoadedModel, data, *, epochs: int | None = None, trainer_args=None, progress: bool = True,
                 refit: bool = False) -> LoadedModel:
    """``base`` with a new head for ``data``'s classes, fine-tuned (FIT_RECIPE) and cached as a
    timm local-dir under $LEARNGENE_HOME/ancestors/fitted/<key> (key: the source weights'
    checksum, the data's fingerprint, the recipe): a second call with the same three loads it.
    Its metrics hold the accuracy before (the base's own head when the class counts agree; the
    kNN probe of its features always) and after."""
    import copy
    import sys

    import lightning as L

    from learngene.core.data import data_for
    from learngene.core.io import check_output
    from learngene.core.training import Classifier, OptimConfig, TrainerArgs, evaluate, lr_groups, make_trainer

    r = dict(FIT_RECIPE)
    if epochs is not None:
        if epochs < 1:
            raise UserError(f"--epochs must be >= 1, got {epochs}")
        r["epochs"] = epochs
    dm = data_for(data, base.data_config, batch_size=r["batch_size"], seed=r["seed"])
    key = _fit_key(base, dm.fingerprint(), r)
    folder = fitted_root() / key
    if not refit and (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return _load_fitted(folder)
    check_output(folder, True, "the fitted ancestor's cache", cache=True)  # before any training
    evald = data_for(data, base.data_config, augment=False)
    before = {"before_knn_top1": _probe_top1(base.model, evald)}
    if base.model.num_classes == dm.num_classes:
        before["before_top1"] = round(evaluate(base.model, evald.test_dataloader())["top1"], 2)
    L.seed_everything(r["seed"], verbose=False)
    model = copy.deepcopy(base.model)
    model.reset_classifier(dm.num_classes)
    groups = lr_groups(model, r["weight_decay"], lambda name: r["head_lr"] if name.startswith("head.") else r["lr"])
    optim = OptimConfig(lr=r["lr"], weight_decay=r["weight_decay"], warmup_fraction=r["warmup_fraction"],
                        label_smoothing=r["label_smoothing"])
    tty = sys.stderr.isatty()
    targs = trainer_args or TrainerArgs(progress=progress and tty, log_lines=progress and not tty)
    targs.max_epochs, targs.label = r["epochs"], "ancestor (fitting to your classes)"
    t0 = time.perf_counter()
    make_trainer(targs).fit(Classifier(model, optim, groups), datamodule=dm)
    model = model.cpu().eval()
    test, val = evaluate(model, evald.test_dataloader()), evaluate(model, evald.val_dataloader())
    metrics = {**before, "test_top1": round(test["top1"], 2), "test_top5": round(test["top5"], 2),
               "val_top1": round(val["top1"], 2), "knn_top1": _probe_top1(model, evald),
               "train_seconds": round(time.perf_counter() - t0, 1), "epochs": r["epochs"]}
    args = {**base.model_args, "num_classes": dm.num_classes}
    cfg = {**base.pretrained_cfg, "num_classes": dm.num_classes, "label_names": list(dm.classes)}
    extra = {"fitted_from": base.source, "base_sha256": base.checksum, "data": dm.fingerprint(), "recipe": r,
             "fit_key": key, "metrics": metrics}
    save_local_dir(model, folder, base.architecture, args, cfg, extra)
    return _load_fitted(folder)


def _load_fitted(folder: Path) -> LoadedModel:
    anc = load_timm(f"local-dir:{folder}")
    meta = json.loads((folder / "config.json").read_text()).get("learngene", {})
    anc.metrics = dict(meta.get("metrics", {}))
    return anc


def fitted_for(base: LoadedModel, dm) -> LoadedModel | None:
    """The newest fitted ancestor of ``base`` for this data (same classes and files), if any."""
    have = dm.fingerprint()
    found = []
    for cfg in fitted_root().glob("*/config.json"):
        try:
            meta = json.loads(cfg.read_text()).get("learngene", {})
        except (OSError, json.JSONDecodeError):
            continue  # a broken cache entry is no ancestor
        data = meta.get("data") or {}
        if meta.get("base_sha256") == base.checksum and all(data.get(k) == have.get(k) for k in ("classes", "files")):
            found.append((cfg.stat().st_mtime, cfg.parent))
    return _load_fitted(max(found)[1]) if found else None


def ancestor_for(base: LoadedModel, dm) -> LoadedModel:
    """The ancestor that reads ``dm``: the one fitted to its classes from ``base``'s weights
    (``learngene ancestor --data DIR --fine-tune`` made it), else ``base`` when its head has
    the data's classes (by name where both are known: ten animal classes are not the ten
    digits the embedded ancestor knows), else a one-line error saying how to fit it."""
    fitted = fitted_for(base, dm)
    if fitted is not None:
        return fitted
    n = base.model.num_classes
    names = (getattr(base.model, "pretrained_cfg", None) or {}).get("label_names")
    if n == dm.num_classes and (not names or list(map(str, names)) == list(dm.classes)):
        return base
    what = f"{n} classes" if n != dm.num_classes else f"other classes ({', '.join(map(str, names[:3]))}, ...)"
    raise UserError(f"data {dm.name} has {dm.num_classes} classes ({', '.join(dm.classes[:3])}, ...) but the ancestor's head "
                    f"has {what}: fit it to them first with `learngene ancestor --data {dm.name} --fine-tune` "
                    "(same --ancestor / weights flags)")
