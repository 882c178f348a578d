"""`learngene bench`: accuracy / params / FLOPs / latency of a pool's members on this device."""

from __future__ import annotations

from learngene.cli.common import (
    add_data_arg,
    add_device_args,
    add_pool_arg,
    add_runtime_args,
    call,
    print_table,
    progress_on,
)

HELP = "measure accuracy / params / FLOPs / latency of every descendant on this device"


def add_arguments(sp) -> None:
    add_pool_arg(sp)
    add_device_args(sp)
    add_data_arg(sp)
    add_runtime_args(sp, many=True)
    sp.add_argument(
        "--batch-sizes", "--batch-size", dest="batch_sizes", default="1,32", help="latency batch sizes (default 1,32)"
    )
    sp.add_argument(
        "--include",
        default="",
        help="also measure: ancestor, children, adapted (the pool's deltas, each on its own task)",
    )
    sp.add_argument(
        "--members", default=None, help="only these member ids, comma separated (default: all; a partial report)"
    )
    sp.add_argument("--revision", default="latest", help="pool revision to measure (default latest)")
    sp.add_argument("--min-run-time", type=float, default=0.3, help="seconds of timing per model and batch size")
    sp.add_argument("--out", metavar="DIR", help="report folder (default: POOL/reports/<device>-<time>)")
    sp.add_argument("--json", action="store_true", help="print the rows as JSON")


def run(ns) -> int:
    from learngene.api import bench

    res = call(
        bench,
        ns,
        ns.pool,
        runtimes=ns.runtime,
        precisions=ns.precision,
        include=[i.strip() for i in ns.include.split(",")],
        num_workers=ns.workers,
        progress=progress_on(ns),
    )
    if ns.json:
        print(res.df.to_json(orient="records", indent=2))
        return 0
    m = res.meta
    print(
        f"{m['pool']} (revision {m['revision']}, stitches {m['stitches']}) on {m['device_name']}, "
        f"{m['threads']} threads"
    )
    for (rt, prec, bs), g in res.df.groupby(["runtime", "precision", "infer_batch_size"], sort=False):
        print(f"{rt} {prec}, batch {bs}:")
        rows = [
            dict(
                r,
                id=r["model"],
                ms=r["infer_step_time"],
                params_m=r["param_count"],
                mflops=r["flops"] / 1e6,
                img_per_s=r["infer_samples_per_sec"],
            )
            for r in g.sort_values("infer_step_time").to_dict("records")
        ]
        print_table(
            rows,
            ["id", "top1", "knn_top1", "params_m", "mflops", "ms", "img_per_s"],
            False,
            mark={r["id"] for r in rows if r["pareto"]},
        )
    for w in m["warnings"]:
        print(f"warning: {w}")
    print(f"report: {res.report}/frontier.md (+ .csv .json .png), {res.seconds:.1f} s")
    return 0
