"""Scratch: every descendant architecture of a pool from random init, trained alone with
cross-entropy for a step budget: what the zoo costs without an ancestor to inherit from."""

from __future__ import annotations

from learngene.baselines.zoo import Zoo, train_alone
from learngene.training import OptimConfig, TrainerArgs

# the calibration's best learning rate for these architectures trained from random init
SCRATCH_OPTIM = OptimConfig(lr=1e-3)


def scratch(pool, dm, steps_each: int, seed: int = 0, optim: OptimConfig = SCRATCH_OPTIM,
            trainer_args: TrainerArgs | None = None, log=None) -> Zoo:
    """Each descendant of ``pool`` (narrow, stitched, wide), made afresh by timm from its
    architecture and model_args (random init exactly as timm initialises a new model)."""
    import lightning as L
    import timm

    from learngene.assemble.api import load_pool_model
    from learngene.pool import Pool

    pool = pool if isinstance(pool, Pool) else Pool.open(pool)
    pm, _ = load_pool_model(pool, "r0")
    models = {}
    for s in pm.specs:
        arch, args = pm.descendant_args(s)
        L.seed_everything(seed, verbose=False)
        models[s.id] = (s.kind, timm.create_model(arch, **args), None)
    return train_alone(models, dm, steps_each, seed, optim, pm.narrow_args["img_size"], "scratch", trainer_args, log)
