"""Baselines for the pool, under the same interfaces: each builds a `learngene.zoo.Zoo`
(standalone timm ViTs with params, FLOPs and validation / test accuracy) from the same
ancestor and data.

- `snnet`: SN-Net stitching between a narrow anchor and the ancestor; the anchor made one of
  `learngene.core.registries.ANCHORS` ways (`make_anchor`: from scratch for a fixed budget or until validation stops
  improving, or distilled from the ancestor as the pool's narrow auxiliary model is);
- `vanilla`: vanilla learngene, the ancestor's last blocks under new random narrow blocks;
- `scratch`: every descendant architecture of a pool from random init;
- `per_size`: one model per size distilled from the ancestor on its own, from random init
  (knowledge distillation) or from the ancestor pruned to that width (Torch-Pruning).

A pool's own descendants are `learngene.zoo.pool_zoo`. Names import lazily (timm,
Lightning) as in `learngene.assembly`.
"""

from learngene.core.lazy import exports

# module names differ from the functions', so importing a module never shadows a function
_EXPORTS = {
    "alone": "train_alone",
    "sn_net": "snnet train_anchor distill_anchor make_anchor ANCHOR_ABOUT",
    "vanilla_learngene": "vanilla vanilla_model",
    "from_scratch": "scratch",
    "one_per_size": "per_size pruned width_for",
}  # module: the names it exports
__getattr__, __dir__, __all__ = exports(__name__, _EXPORTS)
