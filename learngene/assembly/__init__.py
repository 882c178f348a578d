"""assembly: stitch descendants of variable size from a pool, train them, export a child.

Names are imported lazily: importing timm registers `learngene.stitch.stitched` with it,
and that must not drag Lightning in.
"""

_EXPORTS = {
    "AssembleResult": "pipeline",
    "AssembleSpec": "pipeline",
    "assemble": "pipeline",
    "Selection": "select",
    "size_budget": "select",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"learngene.assembly.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
