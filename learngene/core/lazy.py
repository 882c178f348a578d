"""Lazy exports, written once: a package lists ``{submodule: "name name ..."}`` and gets a module-level
``__getattr__`` that imports the submodule on first use (PEP 562), so importing a package
never drags in torch, timm or Lightning through a name nobody asked for."""

from __future__ import annotations

import importlib


def exports(package: str, modules: dict[str, str]):
    """(``__getattr__``, ``__dir__``, ``__all__``) for ``package``: ``modules`` maps a module (relative to
    ``package``, or absolute when it holds a dot) to the names it exports, space-separated."""
    names = {name: mod for mod, listed in modules.items() for name in listed.split()}

    def __getattr__(name):
        if name in names:
            mod = names[name]
            return getattr(importlib.import_module(mod if "." in mod else f"{package}.{mod}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        import sys

        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__, sorted(names)
