"""`learngene target`: the best descendant under a latency / size budget, exported."""

from __future__ import annotations

import json

from learngene.cli.common import add_data_arg, add_device_args, add_pool_arg, progress_on

HELP = "pick the best descendant under a latency / size budget"


def add_arguments(sp) -> None:
    add_pool_arg(sp)
    add_device_args(sp)
    add_data_arg(sp)
    sp.add_argument("--max-latency-ms", type=float, default=None, required=True, help="latency budget per batch, ms")
    sp.add_argument("--batch-size", type=int, default=1, help="batch size the budget is for (default 1)")
    sp.add_argument("--latency", default="p90", choices=["p90", "median"],
                    help="which measured latency must be within the budget (default p90: margin for noise)")
    sp.add_argument("--min-top1", type=float, default=None, help="lowest acceptable test top1, %%")
    sp.add_argument("--max-params", type=float, default=None, help="most parameters")
    sp.add_argument("--remeasure", action="store_true", help="measure now even if a report for this device exists")
    sp.add_argument("--out", metavar="DIR", help="child folder (default: POOL/children/<id>)")
    sp.add_argument("--force", action="store_true", help="replace an existing child folder")
    sp.add_argument("--json", action="store_true", help="print the result as JSON")


def run(ns) -> int:
    from learngene.bench.budget import LATENCY_STATS
    from learngene.deploy import target

    res = target(ns.pool, max_latency_ms=ns.max_latency_ms, batch_size=ns.batch_size, min_top1=ns.min_top1,
                 max_params=ns.max_params, latency=ns.latency, device=ns.device, threads=ns.threads, data=ns.data, out=ns.out,
                 force=ns.force, remeasure=ns.remeasure, progress=progress_on(ns))
    if ns.json:
        print(json.dumps({"chosen": res.chosen, "alternatives": res.alternatives, "child": str(res.child),
                          "report": str(res.report), "measured_now": res.measured_now}, indent=2))
        return 0
    col = LATENCY_STATS[ns.latency]

    def say(r):
        return (f"{r['model']}: top1 {r['top1']:.2f}%, {r[col]:.2f} ms {ns.latency} per batch of {r['infer_batch_size']}, "
                f"{r['param_count']:.3f}M params")

    c = res.chosen
    print(f"chosen {say(c)}: the most accurate descendant within {ns.max_latency_ms:g} ms"
          f" ({'measured now' if res.measured_now else 'report'} {res.report})")
    for r in res.alternatives:
        why = "fits, less accurate" if r[col] <= ns.max_latency_ms else "more accurate, over budget"
        print(f"  alternative {say(r)} ({why})")
    print(f"child -> {res.child}")
    return 0
