"""Learngene pool: auxiliary-model distillation and the on-disk store of instances."""

from learngene.pool.build import build_pool, resolve_recipe_path
from learngene.pool.recipe import AuxSpec, DistillSpec, Recipe, load_recipe
from learngene.pool.store import Pool

__all__ = ["AuxSpec", "DistillSpec", "Pool", "Recipe", "build_pool", "load_recipe", "resolve_recipe_path"]
