"""What the benchmark scripts share: where results go, the machine's name, quiet
Lightning settings, the stitch-init accuracy of a pool, and the small model and recipe of
the growth benchmarks. Scripts import it as `common` (a script's own folder is on the import path
when it is run as ``python benchmarks/NAME.py``); everything here uses learngene's public API."""

from __future__ import annotations

import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
# the small model the growth benchmarks grow from (half the embedded ancestor's width and depth)
SMALL = dict(embed_dim=64, depth=6, num_heads=2)


def cpu_name() -> str:
    import torch

    from learngene.measure.metrics import device_name

    return device_name(torch.device("cpu"))


def ensure_animals() -> None:
    """The animal-mnist package (the animals' images), installed without its TensorFlow dependency."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("animal_mnist") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "animal-mnist==0.4"], check=True)


def quiet():
    """Trainer settings of a benchmark run: CPU, no progress bars."""
    from learngene.core.training import TrainerArgs

    return TrainerArgs(progress=False, accelerator="cpu")


def init_accuracy(pool_dir: Path, inits=("lstsq", "distill")) -> dict:
    """Validation / test top1 of every descendant right after each stitch init, no training."""
    import torch

    from learngene.pool import Pool
    from learngene.stitch.init import init_stitches
    from learngene.stitch.stitched import evaluate_specs
    from learngene.zoo import pool_data

    pool = Pool.open(pool_dir)
    dm = pool_data(pool, None)
    out = {}
    for how in inits:
        pm, _ = pool.model("r0")
        torch.manual_seed(0)
        init_stitches(pm, how, dm, pool.distill_maps() if how == "distill" else None)
        test = evaluate_specs(pm, pm.specs, dm.test_dataloader())
        val = evaluate_specs(pm, pm.specs, dm.val_dataloader())
        out[how] = {sid: {"val": val[sid]["top1"], "test": test[sid]["top1"]} for sid in test}
    return out


def curve_callback(model, dm, every: int, log: list):
    """Appends (step, test top1, val top1) at step 0 and every `every` steps."""
    import lightning as L

    from learngene.core.evaluation import evaluate

    def point(step):
        log.append((step, evaluate(model, dm.test_dataloader())["top1"], evaluate(model, dm.val_dataloader())["top1"]))
        model.train()

    class Curve(L.Callback):
        def on_train_start(self, trainer, pl_module):
            point(0)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step % every == 0:
                point(trainer.global_step)

    return Curve(), point


def train(
    model, dm, recipe, every: int, seed: int, lr: float | None = None, steps: int | None = None
) -> tuple[list, float]:
    """Trains with the recipe (peak `lr` if given; its warm-up + cosine schedule squeezed into
    `steps` optimizer steps if given); returns the curve and the wall seconds."""
    import lightning as L

    from learngene.core.training import Classifier, OptimConfig, TrainerArgs, make_trainer

    L.seed_everything(seed, verbose=False)
    optim = OptimConfig(
        lr=lr or recipe["lr"],
        weight_decay=recipe["weight_decay"],
        warmup_fraction=recipe["warmup_fraction"],
        label_smoothing=recipe["label_smoothing"],
    )
    log: list = []
    t0 = time.perf_counter()
    cb, point = curve_callback(model, dm, every, log)
    length = dict(max_steps=steps, max_epochs=-1) if steps else {}
    make_trainer(TrainerArgs(max_epochs=recipe["epochs"], progress=False), callbacks=[cb], **length).fit(
        Classifier(model, optim), datamodule=dm
    )
    wall = time.perf_counter() - t0
    last = steps or len(dm.train_dataloader()) * recipe["epochs"]
    if log[-1][0] != last:  # the final point, when `every` does not divide the steps
        point(last)
    return log, wall
