"""deltas: fit a model to a new task with a small stored delta (LoRA through PEFT, or a
bottleneck adapter), apply / merge / roll it back. PEFT is imported only when used."""

from learngene.core.lazy import exports

_EXPORTS = {"tasks": "adapt apply ls members", "delta": "attach merge rollback Adapted"}  # module: the names it exports
__getattr__, __dir__, __all__ = exports(__name__, _EXPORTS)
