"""assembly: stitch descendants of variable size from a pool, train them, export a child.

Names are imported lazily: importing timm registers `learngene.stitch.stitched` with it,
and that must not drag Lightning in.
"""

from learngene.core.lazy import exports

_EXPORTS = {
    "pipeline": "AssembleResult AssembleSpec assemble",
    "select": "Selection size_budget",
}  # module: the names it exports
__getattr__, __dir__, __all__ = exports(__name__, _EXPORTS)
