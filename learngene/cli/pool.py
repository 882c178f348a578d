"""`learngene pool info|verify|gc PATH`: what a pool holds; re-hash every file; collect garbage."""

from __future__ import annotations

import json

from learngene.cli.common import print_table

HELP = "inspect a pool: `pool info PATH`, `pool verify PATH [--clean]`, `pool gc PATH [--keep rN,...] [--dry-run]`"


def add_arguments(sp) -> None:
    sp.add_argument("action", choices=["info", "verify", "gc"])
    sp.add_argument("path", metavar="PATH")
    sp.add_argument("--clean", action="store_true", help="verify: remove what interrupted writers left")
    sp.add_argument("--keep", default="", help="gc: revisions to keep besides the latest and those a child or report names")
    sp.add_argument("--dry-run", action="store_true", help="gc: say what would be removed, remove nothing")
    sp.add_argument("--json", action="store_true")


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


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
    if ns.action == "gc":
        pool = Pool.open(ns.path, verify=True)
        res = pool.gc([k.strip() for k in ns.keep.split(",") if k.strip()], dry_run=ns.dry_run)
        if ns.json:
            print(json.dumps(res, indent=2))
            return 0
        verb = "would remove" if ns.dry_run else "removed"
        print(f"{verb} {len(res['revisions'])} revision(s) ({', '.join(res['revisions']) or 'none'}), {len(res['files'])} file(s) "
              f"no kept revision reads ({_mib(res['bytes'])}), {len(res['leftovers'])} leftover(s); kept "
              f"{', '.join(res['kept']) or 'r0 only'}")
        return 0
    pool = Pool.open(ns.path, verify=True)
    rows = pool.info_rows()
    anc = pool.ancestor
    st = pool.storage()
    if ns.json:
        print(json.dumps({"path": str(pool.path), "ancestor": anc, "instances": rows, "auxiliary": pool.auxiliary,
                          "stored_params": pool.stored_params(), "storage": st,
                          "revisions": [{k: r.get(k) for k in ("id", "parent", "created", "train", "trained", "files")}
                                        for r in pool.revisions]}, indent=2))
        return 0
    print(f"pool {pool.path}: ancestor {anc['name']} ({anc['params'] / 1e6:.2f}M, sha256 {anc['sha256'][:12]}), "
          f"{len(rows)} instances, {pool.stored_params() / 1e6:.2f}M stored parameters, {_mib(st['bytes_on_disk'])} on disk "
          f"in {st['files']} files (each stored once)")
    print_table(rows, ["id", "source", "width", "heads", "block", "params", "file"], False)
    print(f"revision r0 (as distilled): needs {_mib(st['revision_bytes']['r0'])}")
    for rev in pool.revisions:
        print(f"revision {rev['id']} (from {rev['parent']}): {rev['train']} training of {len(rev['trained'])} descendant(s), "
              f"{len(rev['files'])} new files, needs {_mib(st['revision_bytes'][rev['id']])}, {rev['created']}")
    return 0
