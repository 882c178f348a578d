"""growth: make a timm ViT larger without losing what it computes (Net2Net, the six
composable function-preserving expansions) or with a learned operator (LiGO).

Names are imported lazily, so ``import learngene.growth`` pulls in neither Lightning nor timm.
"""

from learngene.core.lazy import exports

_EXPORTS = {
    "methods": "grow grow_to_dir resolve_target Target",
    "expand": "EXPANSIONS",
    "ligo": "LigoOperator",
}  # module: the names it exports
# The methods themselves: learngene.growth.expand.expand, .net2net.net2net, .ligo.ligo (a lazy
# export named like its module would be shadowed by the module once imported).
__getattr__, __dir__, __all__ = exports(__name__, _EXPORTS)
