"""assemble: stitch descendants of variable size from a pool, train them, export a child.

Names are imported lazily: importing timm registers `learngene.assemble.model` with it,
and that must not drag Lightning in.
"""

_EXPORTS = {
    "AssembleResult": "api", "Selection": "api", "assemble": "api", "load_pool_model": "api",
    "DescSpec": "configs", "descendants": "configs", "paired_stitching": "configs",
    "PoolModel": "model", "StitchedViT": "model", "AssembleSpec": "train",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"learngene.assemble.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
