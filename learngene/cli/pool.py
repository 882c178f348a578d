"""`learngene pool info|verify|gc PATH`: what a pool holds; re-hash every file; collect garbage."""

from __future__ import annotations

import json

from learngene.cli.common import print_table

HELP = "inspect a pool: `pool info PATH`, `pool verify PATH [--clean]`, `pool gc PATH [--keep rN,...] [--dry-run]`"


def add_arguments(sp) -> None:
    sp.add_argument("action", choices=["info", "verify", "gc"])
    sp.add_argument("path", metavar="PATH")
    sp.add_argument("--clean", action="store_true", help="verify: remove what interrupted writers left")
    sp.add_argument(
        "--keep", default="", help="gc: revisions to keep besides the latest and those a child or report names"
    )
    sp.add_argument("--dry-run", action="store_true", help="gc: say what would be removed, remove nothing")
    sp.add_argument("--json", action="store_true")


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def run(ns) -> int:
    from learngene.api import gc_pool, inspect_pool, verify_pool

    if ns.action == "verify":
        res = verify_pool(ns.path, clean=ns.clean)
        if ns.json:
            print(json.dumps(res, indent=2))
            return 0
        print(f"ok: {res['files']} files in {res['path']} match their sha256 and hold finite numbers")
        left = res["leftovers"]
        if left:
            names = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
            print(
                f"{'removed' if ns.clean else 'left by interrupted writers (ignored; --clean removes them)'}: {names}"
            )
        return 0
    if ns.action == "gc":
        res = gc_pool(ns.path, [k.strip() for k in ns.keep.split(",")], dry_run=ns.dry_run)
        if ns.json:
            print(json.dumps(res, indent=2))
            return 0
        verb = "would remove" if ns.dry_run else "removed"
        print(
            f"{verb} {len(res['revisions'])} revision(s) ({', '.join(res['revisions']) or 'none'}), "
            f"{len(res['files'])} file(s) "
            f"no kept revision reads ({_mib(res['bytes'])}), {len(res['leftovers'])} leftover(s); kept "
            f"{', '.join(res['kept']) or 'r0 only'}"
        )
        return 0
    info = inspect_pool(ns.path)
    if ns.json:
        print(json.dumps(info, indent=2))
        return 0
    anc, st, rows = info["ancestor"], info["storage"], info["instances"]
    print(
        f"pool {info['path']}: ancestor {anc['name']} ({anc['params'] / 1e6:.2f}M, sha256 {anc['sha256'][:12]}), "
        f"{len(rows)} instances, {info['stored_params'] / 1e6:.2f}M stored parameters, "
        f"{_mib(st['bytes_on_disk'])} on disk "
        f"in {st['files']} files (each stored once)"
    )
    print_table(rows, ["id", "source", "width", "heads", "block", "params", "file"], False)
    print(f"revision r0 (as distilled): needs {_mib(st['revision_bytes']['r0'])}")
    for rev in info["revisions"]:
        print(
            f"revision {rev['id']} (from {rev['parent']}): {rev['train']} training of {len(rev['trained'])} "
            f"descendant(s), "
            f"{len(rev['files'])} new files, needs {_mib(st['revision_bytes'][rev['id']])}, {rev['created']}"
        )
    return 0
