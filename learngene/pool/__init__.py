"""Learngene pool: auxiliary-model distillation (build-pool) and the on-disk store of
instances (`Pool`). Names import lazily: opening a pool needs neither Lightning nor timm."""

from learngene.core.lazy import exports

_EXPORTS = {
    "build": "build_pool resolve_recipe_path",
    "recipe": "AuxSpec DistillSpec Recipe load_recipe",
    "store": "Pool",
}  # module: the names it exports
__getattr__, __dir__, __all__ = exports(__name__, _EXPORTS)
