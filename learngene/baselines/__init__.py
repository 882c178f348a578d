"""Baselines for the pool, under the same interfaces: each builds a `learngene.zoo.Zoo`
(standalone timm ViTs with params, FLOPs and validation / test accuracy) from the same
ancestor and data.

- `snnet`: SN-Net stitching between a narrow anchor and the ancestor; the anchor made one of
  `learngene.core.registries.ANCHORS` ways (`make_anchor`: from scratch for a fixed budget or until validation stops
  improving, or distilled from the ancestor as the pool's narrow auxiliary model is);
- `vanilla`: vanilla learngene, the ancestor's last blocks under new random narrow blocks;
- `scratch`: every descendant architecture of a pool from random init.

A pool's own descendants are `learngene.zoo.pool_zoo`. Names import lazily (timm,
Lightning) as in `learngene.assembly`.
"""

# module names differ from the functions', so importing a module never shadows a function
_EXPORTS = {
    "train_alone": "alone",
    "snnet": "sn_net",
    "train_anchor": "sn_net",
    "distill_anchor": "sn_net",
    "make_anchor": "sn_net",
    "ANCHOR_ABOUT": "sn_net",
    "vanilla": "vanilla_learngene",
    "vanilla_model": "vanilla_learngene",
    "scratch": "from_scratch",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"learngene.baselines.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
