"""`inspect_pool`, `verify_pool`, `gc_pool`: what a pool holds, whether its files are intact, and its clean-up."""

from __future__ import annotations

from learngene.pool.store import Pool


def inspect_pool(path) -> dict:
    """What a pool holds: its ancestor, instances, auxiliary models, revisions and storage
    (bytes on disk, each file once, and the bytes each revision needs). Every file is re-hashed."""
    pool = Pool.open(path, verify=True)
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


def verify_pool(path, clean: bool = False) -> dict:
    """Re-hash every file of a pool and check it holds finite numbers; list (``clean``:
    remove) what interrupted writers left. A file that fails is a one-line error naming it."""
    pool = Pool.open(path, verify=False)
    n = pool.verify(finite=True)
    left = pool.clean() if clean else pool.leftovers()
    return {
        "path": str(pool.path),
        "files": n,
        "leftovers": [str(p.relative_to(pool.path)) for p in left],
        "removed": clean,
    }


def gc_pool(path, keep=(), dry_run: bool = False) -> dict:
    """Drop the revisions neither latest, nor in ``keep``, nor named by a child or report, and
    the files no kept revision reads (see `Pool.gc`)."""
    return Pool.open(path, verify=True).gc([k for k in keep if k], dry_run=dry_run)
