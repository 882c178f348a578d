"""The public Python API: one call per verb of the CLI, one module per verb (which only parses, calls one of these,
and prints). `import learngene as lg` reaches them lazily: ``lg.build_pool``, ``lg.assemble``,
``lg.bench``, ``lg.target``, ``lg.export``, ``lg.kit``, ``lg.grow``, ``lg.adapt`` (with
``lg.adapt.apply`` and ``lg.adapt.ls``), ``lg.ancestor``, ``lg.descendants``, ``lg.inspect_pool``,
``lg.verify_pool``, ``lg.gc_pool``, ``lg.resolve``, and the configs ``lg.Pool``, ``lg.Recipe``,
``lg.Selection``, ``lg.AssembleSpec``, ``lg.Budget``.

Stages never import one another; this module is where they meet: a pool's members measured
(`bench`), the best one under a budget exported (`target`, from this device's report or a
device's latency.json), the device kit (`kit`), any member in any format (`export`).
"""

from learngene.api.adapt import adapt, apply_delta, list_deltas
from learngene.api.ancestor import ancestor
from learngene.api.assemble import assemble, descendants
from learngene.api.bench import INCLUDE, bench, pool_members
from learngene.api.build_pool import build_pool
from learngene.api.export import export
from learngene.api.grow import grow
from learngene.api.kit import kit
from learngene.api.pool import gc_pool, inspect_pool, verify_pool
from learngene.api.serve import serve
from learngene.api.target import TargetResult, _finish, read_latency_file, target
from learngene.zoo import resolve

__all__ = [
    "INCLUDE",
    "TargetResult",
    "adapt",
    "ancestor",
    "apply_delta",
    "assemble",
    "bench",
    "build_pool",
    "descendants",
    "export",
    "gc_pool",
    "grow",
    "inspect_pool",
    "kit",
    "list_deltas",
    "pool_members",
    "read_latency_file",
    "resolve",
    "serve",
    "target",
    "verify_pool",
    "_finish",
]
