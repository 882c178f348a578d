"""`inspect_pool`, `verify_pool`, `gc_pool`: what a pool holds, whether its files are intact, and its clean-up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from learngene.api._common import Request, verb
from learngene.pool.store import Pool


@dataclass(frozen=True)
class InspectPoolRequest(Request):
    path: str | Path


@verb(InspectPoolRequest)
def inspect_pool(r: InspectPoolRequest) -> dict:
    """What a pool holds: its ancestor, instances, auxiliary models, revisions and storage
    (bytes on disk, each file once, and the bytes each revision needs). Every file is re-hashed."""
    pool = Pool.open(r.path, verify=True)
    return {
        "path": str(pool.path),
        "ancestor": pool.ancestor,
        "instances": pool.info_rows(),
        "auxiliary": pool.auxiliary,
        "stored_params": pool.stored_params(),
        "storage": pool.storage(),
        "revisions": [
            {k: r.get(k) for k in ("id", "parent", "created", "train", "trained", "files")} for r in pool.revisions
        ],
    }


@dataclass(frozen=True)
class VerifyPoolRequest(Request):
    path: str | Path
    clean: bool = False


@verb(VerifyPoolRequest)
def verify_pool(r: VerifyPoolRequest) -> dict:
    """Re-hash every file of a pool and check it holds finite numbers; list (``clean``:
    remove) what interrupted writers left. A file that fails is a one-line error naming it."""
    pool = Pool.open(r.path, verify=False)
    n = pool.verify(finite=True)
    left = pool.clean() if r.clean else pool.leftovers()
    return {
        "path": str(pool.path),
        "files": n,
        "leftovers": [str(p.relative_to(pool.path)) for p in left],
        "removed": r.clean,
    }


@dataclass(frozen=True)
class GcPoolRequest(Request):
    path: str | Path
    keep: str | Sequence = ()
    dry_run: bool = False


@verb(GcPoolRequest)
def gc_pool(r: GcPoolRequest) -> dict:
    """Drop the revisions neither latest, nor in ``keep``, nor named by a child or report, and
    the files no kept revision reads (see `Pool.gc`)."""
    return Pool.open(r.path, verify=True).gc([k for k in r.keep if k], dry_run=r.dry_run)
