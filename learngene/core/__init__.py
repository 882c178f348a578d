"""The shared core every stage stands on: errors, I/O (staged writes, checksums, timm
local-dirs), the ViT view (the one place that knows timm's ViT), data sources, training,
stitched models and their joint training, model loading and the reference resolver, export.

Modules are imported by name (``learngene.core.io``, ...); nothing is re-exported here, so
importing one module never drags in torch, timm or Lightning through another. The version
lives here, at the ground, because the writers of pools and models record it.
"""

__version__ = "0.1.0"
