"""growth: make a timm ViT larger without losing what it computes (Net2Net, the six
composable function-preserving expansions) or with a learned operator (LiGO).

Names are imported lazily, so ``import learngene.growth`` pulls in neither Lightning nor timm.
"""

_EXPORTS = {
    "grow": "methods",
    "grow_to_dir": "methods",
    "resolve_target": "methods",
    "Target": "methods",
    "EXPANSIONS": "expand",
    "LigoOperator": "ligo",
}
# The methods themselves: learngene.growth.expand.expand, .net2net.net2net, .ligo.ligo (a lazy
# export named like its module would be shadowed by the module once imported).
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"learngene.growth.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
