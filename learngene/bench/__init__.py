"""bench: accuracy / kNN probe / params / FLOPs / latency of every descendant on this device,
the frontier report, and target: the best descendant under a budget. Imported lazily
(pandas, matplotlib and faiss are heavy)."""

_EXPORTS = {"BenchResult": "api", "bench": "api", "TargetResult": "budget", "target": "budget"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"learngene.bench.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
