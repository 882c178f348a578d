"""`learngene pool info|verify PATH`: what a pool holds; re-hash every file."""

from __future__ import annotations

import json

from learngene.cli.common import print_table

HELP = "inspect a pool: `pool info PATH`, `pool verify PATH [--clean]`"


def add_arguments(sp) -> None:
    sp.add_argument("action", choices=["info", "verify"])
    sp.add_argument("path", metavar="PATH")
    sp.add_argument("--clean", action="store_true", help="verify: remove what interrupted writers left")
    sp.add_argument("--json", action="store_true")


def run(ns) -> int:
    from learngene.pool import Pool

    if ns.action == "verify":
        pool = Pool.open(ns.path, verify=False)
        n = pool.verify(finite=True)
        print(f"ok: {n} files in {pool.path} match their sha256 and hold finite numbers")
        left = pool.clean() if ns.clean else pool.leftovers()
        if left:
            names = ", ".join(str(p.relative_to(pool.path)) for p in left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
            print(f"{'removed' if ns.clean else 'left by interrupted writers (ignored; --clean removes them)'}: {names}")
        return 0
    pool = Pool.open(ns.path, verify=True)
    rows = pool.info_rows()
    anc = pool.ancestor
    if ns.json:
        print(json.dumps({"path": str(pool.path), "ancestor": anc, "instances": rows, "auxiliary": pool.auxiliary,
                          "stored_params": pool.stored_params(),
                          "revisions": [{k: r[k] for k in ("id", "parent", "created", "train", "trained", "files")}
                                        for r in pool.revisions]}, indent=2))
        return 0
    print(f"pool {pool.path}: ancestor {anc['name']} ({anc['params'] / 1e6:.2f}M, sha256 {anc['sha256'][:12]}), "
          f"{len(rows)} instances, {pool.stored_params() / 1e6:.2f}M stored parameters")
    print_table(rows, ["id", "source", "width", "heads", "block", "params", "file"], False)
    for rev in pool.revisions:
        print(f"revision {rev['id']} (from {rev['parent']}): {rev['train']} training of {len(rev['trained'])} descendant(s), "
              f"{len(rev['files'])} files, {rev['created']}")
    return 0
