"""learngene: one pretrained ViT -> a zoo of variable-sized models.

    import learngene as lg
    pool = lg.build_pool()                                    # distil the embedded ancestor
    res = lg.assemble(pool, lg.Selection(size="tiny"))        # the tiny child, trained and exported
    rows = lg.bench(pool).df                                  # the frontier on this device

Every verb of the CLI is one call here (`learngene.api`), documented with its arguments.

The package imports lightly: torch/timm/lightning are imported by the submodules that need
them, so `learngene --help` answers fast. The stitched descendant architecture is
registered with timm as soon as timm is imported (now, if it already is), so that after
``import learngene`` ``timm.create_model('local-dir:pools/NAME/children/ID', pretrained=True)``
loads an exported child.
"""

import sys

from learngene.core import __version__
from learngene.core.errors import UserError
from learngene.core.lazy import exports

# The public API, imported on first use (``import learngene`` stays light): module -> names.
_API = {
    "learngene.api": "ancestor build_pool assemble descendants bench target kit export grow adapt "
    "inspect_pool verify_pool gc_pool resolve serve",
    "learngene.pool.store": "Pool",
    "learngene.pool.recipe": "Recipe",
    "learngene.assembly.select": "Selection",
    "learngene.assembly.pipeline": "AssembleSpec",
    "learngene.measure.budget": "Budget",
    "learngene.zoo": "Zoo Member",
}


__getattr__, __dir__, _names = exports(__name__, _API)
__all__ = ["UserError", "__version__", *_names]


def _register_with_timm() -> None:
    import learngene.stitch.stitched  # noqa: F401  (its @register_model runs on import)


class _AfterTimmImport:
    """A meta-path finder that lets timm import as usual, then registers learngene's models.
    It stays until timm's module has really run: libraries probe ``find_spec("timm")``
    without importing it (an availability check), and a finder that left at the first probe
    would never see the real import."""

    def find_spec(self, name, path=None, target=None):
        if name != "timm":
            return None
        import importlib.util

        sys.meta_path.remove(self)  # find the real spec without finding ourselves again
        try:
            spec = importlib.util.find_spec("timm")
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module
        finder = self

        def exec_then_register(module):
            exec_module(module)
            if finder in sys.meta_path:
                sys.meta_path.remove(finder)
            _register_with_timm()

        spec.loader.exec_module = exec_then_register
        return spec


if "timm" in sys.modules:
    _register_with_timm()
else:
    sys.meta_path.insert(0, _AfterTimmImport())
