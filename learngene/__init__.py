"""learngene: one pretrained ViT -> a zoo of variable-sized models.

The package imports lightly: torch/timm/lightning are imported by the submodules that need
them, so `learngene --help` answers fast.
"""

__version__ = "0.1.0"

from learngene.errors import UserError  # noqa: E402

__all__ = ["UserError", "__version__"]
