"""deltas: fit a model to a new task with a small stored delta (LoRA through PEFT, or a
bottleneck adapter), apply / merge / roll it back. PEFT is imported only when used."""

_EXPORTS = {
    "adapt": "tasks",
    "apply": "tasks",
    "ls": "tasks",
    "members": "tasks",
    "attach": "delta",
    "merge": "delta",
    "rollback": "delta",
    "Adapted": "delta",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"learngene.deltas.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
