"""The embedded ancestors: a DeiT-architecture ViT scaled to a 2-core CPU, trained on an
embedded testbed (``embedded``: the digits; ``embedded:animals``) until validation stops
improving.

Trained to its plateau an ancestor takes longer than the main job may (5 minutes on 2 cores),
so, as a user starts from a downloaded DeiT-B, the package ships the weights its default
recipe gives (``learngene/weights/embedded-<testbed>/``, a timm local-dir with the sha256 of
its weights, made by ``python benchmarks/ancestor.py --ship``). Any other recipe (``--epochs``,
``--seed``, ``--retrain``) trains into its own cache folder,
``$LEARNGENE_HOME/ancestors/embedded-<testbed>-<recipe key>``, so it never replaces the ancestor
pools built on the default were distilled from. Every load checks the weights against the
sha256 recorded when they were written: a corrupted cache is retrained, saying so in one
line; corrupted shipped weights are refused.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from learngene.core.errors import UserError, warn
from learngene.core.io import file_sha256, home
from learngene.core.localdir import save_local_dir
from learngene.models.loading import LoadedModel, load_timm

EMBEDDED = "embedded"
SHIPPED = Path(__file__).resolve().parents[1] / "weights"

# DeiT-Ti's architecture (timm's deit_tiny_patch16_224 entry point) with the sizes overridden
# for 16x16 images. Width 128 / 4 heads: the calibration saw width 192 gain nothing for 2.2x
# the time.
EMBEDDED_ARCH = "deit_tiny_patch16_224"
EMBEDDED_MODEL_ARGS = dict(img_size=16, patch_size=4, embed_dim=128, depth=12, num_heads=4, num_classes=10)
# The recipe, part of the cache key (changing it retrains): the DeiT recipe scaled down,
# trained until validation top1 stops improving (at most 300 epochs, stopped 30 after the
# best, whose state is kept). A fixed 30 epochs (the first recipe) left the animals' ancestor
# below a narrow model 7x smaller trained to its plateau.
EMBEDDED_RECIPE = dict(
    epochs="auto",
    cap=300,
    patience=30,
    lr=1e-3,
    weight_decay=0.05,
    warmup_fraction=0.1,
    label_smoothing=0.1,
    batch_size=64,
    seed=0,
)


@dataclass(frozen=True)
class Testbed:
    """An embedded ancestor: the embedded data source it is trained on, and how."""

    data: str  # a scheme of learngene.core.registries.DATA_SOURCES
    model_args: dict
    recipe: dict


# ``embedded`` is the digits' ancestor (the main job and the tests); ``embedded:NAME`` the
# others. The animals take the digits' architecture and recipe unchanged, at the same 16 px.
TESTBEDS = {
    "digits": Testbed("digits", EMBEDDED_MODEL_ARGS, EMBEDDED_RECIPE),
    "animals": Testbed("animals", EMBEDDED_MODEL_ARGS, EMBEDDED_RECIPE),
    # the silhouettes among clutter, drawn anew every epoch (learngene.core.clutter): where
    # the plain silhouettes gave no slope between sizes, capacity is the limit here
    "clutter": Testbed("clutter", EMBEDDED_MODEL_ARGS, EMBEDDED_RECIPE),
}
DEFAULT_TESTBED = "digits"


def testbed(name: str | None) -> Testbed:
    if name not in TESTBEDS and name is not None:
        raise UserError(
            f"unknown embedded ancestor {EMBEDDED}:{name} (known: {EMBEDDED}, "
            + ", ".join(f"{EMBEDDED}:{t}" for t in TESTBEDS if t != DEFAULT_TESTBED)
            + ")"
        )
    return TESTBEDS[name or DEFAULT_TESTBED]


def ancestor_name(name: str | None) -> str:
    """The reference that loads this testbed's ancestor: ``embedded`` or ``embedded:NAME``."""
    return EMBEDDED if (name or DEFAULT_TESTBED) == DEFAULT_TESTBED else f"{EMBEDDED}:{name}"


def recipe(epochs=None, seed: int | None = None, name: str | None = None) -> dict:
    """The testbed's recipe with ``epochs`` (an int or ``"auto"``) / ``seed`` replaced."""
    from learngene.core import limits

    r = dict(testbed(name).recipe)
    if epochs is not None:
        r["epochs"] = limits.epochs(epochs)
    if seed is not None:
        r["seed"] = limits.seed(seed)
    return r


def recipe_key(r: dict, name: str | None = None, model_args: dict | None = None) -> str:
    """What the weights are a function of: the architecture, the recipe, the data."""
    from learngene.core.data import open_source

    tb = testbed(name)
    what = [EMBEDDED_ARCH, {**tb.model_args, **(model_args or {})}, r, open_source(tb.data).fingerprint()]
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def shipped_dir(name: str | None = None) -> Path:
    return SHIPPED / f"embedded-{name or DEFAULT_TESTBED}"


def training_dir(key: str, name: str | None = None) -> Path:
    """Where a resumable run of this recipe keeps its per-epoch checkpoint."""
    return home() / "ancestors" / "training" / f"embedded-{name or DEFAULT_TESTBED}-{key}"


def cache_dir(key: str, name: str | None = None) -> Path:
    return home() / "ancestors" / f"embedded-{name or DEFAULT_TESTBED}-{key}"


def train_embedded(
    folder: Path,
    *,
    name: str | None = None,
    epochs=None,
    seed: int | None = None,
    trainer_args=None,
    progress: bool = True,
    resume: bool = False,
    model_args: dict | None = None,
) -> LoadedModel:
    """Train a testbed's embedded ancestor on its data and save it (a timm local-dir) in
    ``folder``, with the recipe, its key, the training record and the weights' sha256.

    With ``resume`` every epoch is checkpointed under ``$LEARNGENE_HOME/ancestors/training/``
    (one folder per recipe key) and a run cut off (a session's end, Ctrl-C) continues from its
    last epoch, with its best-so-far state and patience count: a plateau run takes hours on 2
    cores, longer than one sitting. ``model_args`` overrides the testbed's architecture (the
    narrow architecture trained alone with the ancestor's recipe: the low end of the slope)."""
    import shutil
    import sys

    import lightning as L
    import timm

    from learngene.core.convergence import Convergence
    from learngene.core.data import LearngeneDataModule
    from learngene.core.evaluation import split_metrics
    from learngene.core.io import check_output
    from learngene.core.training import Classifier, OptimConfig, TrainerArgs, fit, resumable

    folder = Path(folder)
    check_output(
        folder, True, "the embedded ancestor's cache", cache=True
    )  # an unwritable cache is refused before training
    tb, r = testbed(name), recipe(epochs, seed, name)
    L.seed_everything(r["seed"], verbose=False)
    dm = LearngeneDataModule(tb.data, batch_size=r["batch_size"], seed=r["seed"])
    args = {**tb.model_args, **(model_args or {})}
    key = recipe_key(r, name, model_args)
    model = timm.create_model(EMBEDDED_ARCH, **args)
    optim = OptimConfig(
        lr=r["lr"],
        weight_decay=r["weight_decay"],
        warmup_fraction=r["warmup_fraction"],
        label_smoothing=r["label_smoothing"],
    )
    tty = sys.stderr.isatty()
    targs = trainer_args or TrainerArgs(progress=progress and tty, log_lines=progress and not tty)
    targs.progress = progress and targs.progress
    targs.label = f"ancestor ({ancestor_name(name)})"
    resume_kw, ckpt_dir = {}, training_dir(key, name)
    prior = _seconds_before(ckpt_dir / "seconds.json") if resume else 0.0
    if resume:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        resume_kw = dict(
            default_root_dir=ckpt_dir, **resumable(ckpt_dir, [_elapsed_keeper(ckpt_dir / "seconds.json", prior)])
        )
        if resume_kw["ckpt_path"]:
            print(f"learngene: {targs.label} resumes from {resume_kw['ckpt_path']}", file=sys.stderr)
    t0 = time.perf_counter()
    record, _ = fit(
        Classifier(model, optim),
        dm,
        targs,
        epochs=r["epochs"],
        auto=Convergence(cap=r.get("cap", 300), patience=r.get("patience", 30)),
        **resume_kw,
    )
    wall = prior + time.perf_counter() - t0
    model = model.cpu().eval()
    metrics = {
        **split_metrics(model, dm),
        "train_seconds": round(wall, 1),
        "epochs": record["epochs_run"],
        "best_epoch": record["best_epoch"],
        "steps": record["steps"],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    cfg = dm.data_config
    pretrained_cfg = {
        "architecture": EMBEDDED_ARCH,
        "num_classes": len(dm.classes),
        "input_size": list(cfg["input_size"]),
        "interpolation": cfg["interpolation"],
        "mean": list(cfg["mean"]),
        "std": list(cfg["std"]),
        "crop_pct": cfg["crop_pct"],
        "crop_mode": cfg["crop_mode"],
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "label_names": list(dm.classes),
    }
    extra = {
        "recipe": r,
        "recipe_key": key,
        "data": dm.fingerprint(),
        "metrics": metrics,
        "training": record,
    }

    def checksum(stage: Path) -> dict:  # recorded beside the weights, checked at every load
        return {"weights_sha256": file_sha256(stage / "model.safetensors")}

    save_local_dir(model, folder, EMBEDDED_ARCH, args, pretrained_cfg, extra, write_more=checksum)
    if resume:
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # written: nothing left to resume
    return load_embedded(folder, name)


def _seconds_before(path: Path) -> float:
    """Training seconds of a resumed run's earlier sittings (0 for a fresh run)."""
    try:
        return float(json.loads(path.read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def _elapsed_keeper(path: Path, prior: float):
    """A callback that keeps the run's training seconds so far beside its checkpoint at every
    epoch's end, so the record counts the whole run's wall time, not the last sitting's."""
    import lightning as L

    start = time.perf_counter()

    class Elapsed(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            path.write_text(json.dumps({"seconds": prior + time.perf_counter() - start}))

    return Elapsed()


def _meta(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text()).get("learngene", {})
    except (OSError, ValueError, RecursionError, AttributeError):
        return {}


def intact(folder: Path, key: str) -> bool | None:
    """None: no ancestor of this recipe there; True: there and its weights have the sha256
    recorded when they were written; False: there but altered or corrupt."""
    meta = _meta(folder)
    if meta.get("recipe_key") != key or not (folder / "model.safetensors").is_file():
        return None
    return meta.get("weights_sha256") == file_sha256(folder / "model.safetensors")


def load_embedded(folder: Path, name: str | None = None) -> LoadedModel:
    anc = load_timm(f"local-dir:{folder}")
    anc.name, anc.source = ancestor_name(name), f"embedded:{folder}"
    anc.metrics = dict(_meta(folder).get("metrics", {}))
    return anc


def embedded_ancestor(
    retrain: bool = False,
    progress: bool = True,
    trainer_args=None,
    epochs=None,
    seed: int | None = None,
    name: str | None = None,
) -> LoadedModel:
    """A testbed's embedded ancestor (``name``; default the digits): the shipped weights for the
    default recipe, else the cache of this recipe, trained when missing, corrupt or asked."""
    r = recipe(epochs, seed, name)
    key = recipe_key(r, name)
    shipped = shipped_dir(name)
    if not retrain:
        state = intact(shipped, key)
        if state is False:
            raise UserError(
                f"the shipped weights of {ancestor_name(name)} ({shipped}) fail their checksum: "
                "reinstall learngene, or pass --retrain to train them here"
            )
        if state:
            return load_embedded(shipped, name)
    folder = cache_dir(key, name)
    if not retrain:
        state = intact(folder, key)
        if state:
            return load_embedded(folder, name)
        if state is False:
            warn(
                f"the cached {ancestor_name(name)} in {folder} fails its checksum (altered or corrupt): "
                f"training it again"
            )
    return train_embedded(folder, name=name, epochs=epochs, seed=seed, trainer_args=trainer_args, progress=progress)


def describe(anc: LoadedModel, data=None) -> dict:
    """The facts `learngene ancestor` prints; with ``data``, its accuracy on that data's test
    split. For a folder, the ancestor described is the one that reads it (`ancestor_for`: the
    one fitted to its classes, once `ancestor --fine-tune` made it), as build-pool would take."""
    if data:
        from learngene.core.data import data_for
        from learngene.core.evaluation import evaluate
        from learngene.models.fitted import ancestor_for

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
