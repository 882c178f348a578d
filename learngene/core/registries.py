"""Every registry of learngene in one torch-free module: where things grow.

A registry maps a name to the ``module:attribute`` that implements it, imported on first use,
so the CLI's ``choices=`` and ``--help`` read the names without importing torch, timm or
Lightning, and dispatch goes through the same table. A new stitch kind, data source, runtime,
export format, growth or delta method, stitch init or SN-Net anchor is one module (or one
function) and one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from learngene.core.errors import UserError


class Registry(Mapping):
    """name -> implementation (``module:attribute``, imported when first looked up)."""

    def __init__(self, what: str, entries: dict[str, str]):
        self.what = what
        self._entries = dict(entries)
        self._loaded: dict[str, object] = {}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def check(self, name, flag: str | None = None) -> str:
        """``name`` if registered, else a one-line error listing the names."""
        if name not in self._entries:
            where = f"{flag} " if flag else ""
            raise UserError(f"unknown {where}{self.what} {name!r} (choose from {', '.join(self._entries)})")
        return name

    def __getitem__(self, name):
        self.check(name)
        if name not in self._loaded:
            module, _, attr = self._entries[name].partition(":")
            self._loaded[name] = getattr(importlib.import_module(module), attr)
        return self._loaded[name]

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.what}: {', '.join(self._entries)})"


# kinds of stitch between a narrow and a wide block (the `linear` path is what least squares fits)
STITCH_KINDS = Registry(
    "stitch kind",
    {
        "linear": "learngene.stitch.stitched:linear_stitch",
        "mlp": "learngene.stitch.stitched:MLPStitch",
    },
)
# how a new stitch is initialised
STITCH_INITS = Registry(
    "stitch init",
    {
        "lstsq": "learngene.stitch.init:init_lstsq",
        "distill": "learngene.stitch.init:init_distill",
    },
)
# data sources by scheme (anything else is a folder: an ImageFolder)
DATA_SOURCES = Registry(
    "data source",
    {
        "digits": "learngene.core.sources:DigitsSource",
        "animals": "learngene.core.sources:AnimalsSource",
        "clutter": "learngene.core.clutter:ClutterSource",
    },
)
# runtimes bench and target measure members in
RUNTIMES = Registry(
    "runtime",
    {
        "torch": "learngene.measure.runtimes:TorchRuntime",
        "onnxruntime": "learngene.measure.runtimes:OnnxRuntime",
    },
)
# formats a member is exported in
FORMATS = Registry(
    "format",
    {
        "timm": "learngene.formats:write_timm",
        "pt2": "learngene.formats:write_pt2",
        "onnx": "learngene.formats:write_onnx",
    },
)
# ways to grow a model
GROWTH_METHODS = Registry(
    "growth method",
    {
        "net2net": "learngene.growth.methods:grow_net2net",
        "expand": "learngene.growth.methods:grow_expand",
        "ligo": "learngene.growth.methods:grow_ligo",
    },
)
# small stored deltas for a new task
DELTA_METHODS = Registry(
    "adapt method",
    {
        "lora": "learngene.deltas.delta:LORA",
        "adapter": "learngene.deltas.delta:ADAPTER",
    },
)
# how SN-Net's narrow anchor is made
ANCHORS = Registry(
    "anchor",
    {
        "plateau": "learngene.baselines.sn_net:plateau_anchor",
        "distilled": "learngene.baselines.sn_net:distilled_anchor",
        "fixed": "learngene.baselines.sn_net:fixed_anchor",
    },
)

# options (choices, not implementations)
PRECISIONS = ("fp32", "int8", "int8-static")  # of an exported / measured member: ONNX Runtime's quantisation
TRAIN_MODES = ("auto", "all", "target", "none")  # what assemble trains
TUNE = ("all", "stitches")  # what joint training updates
# which descendant a joint training step samples: uniform; a FLOPs group, then a member; or
# half uniform, half by how far each member is below the best member no costlier (joint.py)
SAMPLING = ("uniform", "flops", "deficit")
LATENCY_STATS = ("p90", "median")  # which measured latency a budget holds
