"""measure: accuracy / kNN probe / params / FLOPs / latency of zoo members on this device (`bench`),
the frontier report, and the rules that pick the best member under a budget. Imported
lazily (pandas, matplotlib and faiss are heavy)."""

_EXPORTS = {
    "BenchResult": "members",
    "bench": "members",
    "pick": "budget",
    "Budget": "budget",
    "LATENCY_STATS": "budget",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"learngene.measure.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
