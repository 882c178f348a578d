"""measure: accuracy / kNN probe / params / FLOPs / latency of zoo members on this device (`bench`),
the frontier report, and the rules that pick the best member under a budget. Imported
lazily (pandas, matplotlib and faiss are heavy)."""

from learngene.core.lazy import exports

_EXPORTS = {"members": "BenchResult bench", "budget": "pick Budget LATENCY_STATS"}  # module: the names it exports
__getattr__, __dir__, __all__ = exports(__name__, _EXPORTS)
