"""The embedded ancestor: a DeiT-architecture ViT scaled to a 2-core CPU, trained on the
embedded digits and cached under ``$LEARNGENE_HOME/ancestors/embedded`` as a timm local-dir,
so plain ``timm.create_model('local-dir:...', pretrained=True)`` loads it too."""

from __future__ import annotations

import hashlib
import json
import time
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


def embedded_dir() -> Path:
    return home() / "ancestors" / EMBEDDED


def _recipe(epochs: int | None = None, seed: int | None = None) -> dict:
    r = dict(EMBEDDED_RECIPE)
    if epochs is not None:
        if epochs < 1:
            raise UserError(f"--epochs must be >= 1, got {epochs}")
        r["epochs"] = epochs
    if seed is not None:
        r["seed"] = seed
    return r


def _recipe_key(recipe: dict) -> str:
    from learngene.core.data import DIGITS_IMG_SIZE, DIGITS_SPLIT_SEED

    blob = json.dumps([EMBEDDED_ARCH, EMBEDDED_MODEL_ARGS, recipe, DIGITS_SPLIT_SEED, DIGITS_IMG_SIZE], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_embedded(
    folder: Path | None = None,
    progress: bool = True,
    epochs: int | None = None,
    trainer_args=None,
    seed: int | None = None,
) -> LoadedModel:
    """Train the embedded ancestor on the embedded digits and cache it as a timm local-dir."""
    import lightning as L
    import timm

    from learngene.core.data import LearngeneDataModule, digits_data_config
    from learngene.core.training import Classifier, OptimConfig, TrainerArgs, evaluate, make_trainer

    folder = Path(folder) if folder else embedded_dir()
    r = _recipe(epochs, seed)
    L.seed_everything(r["seed"], verbose=False)
    data_cfg = digits_data_config()
    dm = LearngeneDataModule(None, data_config=data_cfg, batch_size=r["batch_size"], seed=r["seed"])
    model = timm.create_model(EMBEDDED_ARCH, **EMBEDDED_MODEL_ARGS)
    optim = OptimConfig(lr=r["lr"], weight_decay=r["weight_decay"], warmup_fraction=r["warmup_fraction"], label_smoothing=r["label_smoothing"])
    targs = trainer_args or TrainerArgs()
    targs.max_epochs, targs.progress = r["epochs"], progress and targs.progress
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
        "label_names": [str(i) for i in range(10)],
    }
    extra = {"recipe": r, "recipe_key": _recipe_key(r), "data": dm.fingerprint(), "metrics": metrics}
    save_local_dir(model, folder, EMBEDDED_ARCH, EMBEDDED_MODEL_ARGS, pretrained_cfg, extra)
    return _load_embedded(folder)


def _load_embedded(folder: Path) -> LoadedModel:
    anc = load_timm(f"local-dir:{folder}")
    meta = json.loads((folder / "config.json").read_text()).get("learngene", {})
    anc.name, anc.source = EMBEDDED, f"embedded:{folder}"
    anc.metrics = dict(meta.get("metrics", {}))
    return anc


def embedded_ancestor(
    retrain: bool = False,
    progress: bool = True,
    folder: Path | None = None,
    trainer_args=None,
    epochs: int | None = None,
    seed: int | None = None,
) -> LoadedModel:
    """The cached embedded ancestor; trained when missing, stale (another recipe, e.g. other
    epochs) or asked."""
    folder = Path(folder) if folder else embedded_dir()
    cfg_file = folder / "config.json"
    if not retrain and cfg_file.is_file() and (folder / "model.safetensors").is_file():
        try:
            meta = json.loads(cfg_file.read_text()).get("learngene", {})
        except json.JSONDecodeError:
            meta = {}
        if meta.get("recipe_key") == _recipe_key(_recipe(epochs, seed)):
            return _load_embedded(folder)
    return train_embedded(folder, progress=progress, epochs=epochs, trainer_args=trainer_args, seed=seed)


def describe(anc: LoadedModel, data=None) -> dict:
    """The facts `learngene ancestor` prints; with ``data``, its accuracy on that data's test split."""
    info = anc.info()
    if data:
        from learngene.core.data import data_for
        from learngene.core.training import evaluate

        dm = data_for(data, anc.data_config, augment=False)
        if dm.num_classes != info["num_classes"]:
            raise UserError(f"{data} has {dm.num_classes} classes but the ancestor's head has {info['num_classes']}")
        acc = evaluate(anc.model, dm.test_dataloader())
        info.update({"data": str(data), "data_top1": round(acc["top1"], 2), "data_top5": round(acc["top5"], 2)})
    return info
