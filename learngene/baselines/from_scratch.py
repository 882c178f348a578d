"""Scratch: every descendant architecture of a pool from random init, trained alone with
cross-entropy for a step budget: what the zoo costs without an ancestor to inherit from."""

from __future__ import annotations

from learngene.baselines.alone import train_alone
from learngene.core.training import OptimConfig, TrainerArgs
from learngene.zoo import Zoo

# the calibration's best learning rate for these architectures trained from random init
SCRATCH_OPTIM = OptimConfig(lr=1e-3)


def scratch(
    architectures: Zoo,
    dm,
    steps_each: int,
    *,
    seed: int = 0,
    optim: OptimConfig = SCRATCH_OPTIM,
    trainer_args: TrainerArgs | None = None,
    log=None,
) -> Zoo:
    """Each member of ``architectures`` (a pool's zoo: narrow, stitched, wide) made afresh by
    timm from its architecture and model_args (random init exactly as timm initialises a
    new model)."""
    import lightning as L
    import timm

    models = {}
    for m in architectures:
        L.seed_everything(seed, verbose=False)
        models[m.id] = (
            m.kind,
            timm.create_model(m.architecture, **m.model_args),
            None,
            m.architecture,
            dict(m.model_args),
        )
    return train_alone(models, dm, steps_each, seed, optim, "scratch", trainer_args, log)
