"""Learngene pool: auxiliary-model distillation (build-pool) and the on-disk store of
instances (`Pool`). Names import lazily: opening a pool needs neither Lightning nor timm."""

_EXPORTS = {
    "build_pool": "build",
    "resolve_recipe_path": "build",
    "AuxSpec": "recipe",
    "DistillSpec": "recipe",
    "Recipe": "recipe",
    "load_recipe": "recipe",
    "Pool": "store",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"learngene.pool.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
