"""`learngene target`: the best descendant under a latency / size budget, exported."""

from __future__ import annotations

import json

from learngene.cli.common import (
    add_data_arg,
    add_device_args,
    add_pool_arg,
    add_runtime_args,
    call,
    progress_on,
)
from learngene.core.registries import FORMATS, LATENCY_STATS

HELP = "pick the best descendant under a latency / size budget (this device, or a device's latency.json)"


def add_arguments(sp) -> None:
    add_pool_arg(sp)
    add_device_args(sp)
    add_data_arg(sp)
    add_runtime_args(sp, many=False, precision_default=None)
    sp.add_argument("--max-latency-ms", type=float, default=None, required=True, help="latency budget per batch, ms")
    sp.add_argument("--batch-size", type=int, default=1, help="batch size the budget is for (default 1)")
    sp.add_argument(
        "--latency",
        default="p90",
        choices=LATENCY_STATS,
        help="which measured latency must be within the budget (default p90: margin for noise)",
    )
    sp.add_argument("--min-top1", type=float, default=None, help="lowest acceptable test top1, %%")
    sp.add_argument("--max-params", type=float, default=None, help="most parameters")
    sp.add_argument(
        "--latency-file", metavar="JSON", help="pick from a device's own measurements (probe.py's latency.json)"
    )
    sp.add_argument("--remeasure", action="store_true", help="measure now even if a report for this device exists")
    sp.add_argument("--no-train", action="store_true", help="export an untrained pick as it is (stitch at its init)")
    sp.add_argument(
        "--format",
        default=None,
        choices=FORMATS.names,
        help="export format (default: pt2 for torch, onnx for onnxruntime or a latency file)",
    )
    sp.add_argument("--out", metavar="DIR", help="child folder (default: POOL/children/<id or device pick name>)")
    sp.add_argument("--force", action="store_true", help="replace an existing child folder")
    sp.add_argument("--json", action="store_true", help="print the result as JSON")


def run(ns) -> int:
    from learngene.api import target
    from learngene.measure.budget import Budget

    on_device = ns.latency_file is not None
    budget = Budget(
        ns.max_latency_ms, batch_size=ns.batch_size, latency=ns.latency, min_top1=ns.min_top1, max_params=ns.max_params
    )
    res = call(
        target,
        ns,
        ns.pool,
        budget,
        train=not ns.no_train,
        fmt=ns.format,
        progress=progress_on(ns),
    )
    if ns.json:
        print(json.dumps(res.to_dict(), indent=2))
        return 0
    col = budget.column

    def say(r):
        prec = f" {r['precision']}" if "precision" in r else ""
        return (
            f"{r['model']}{prec}: top1 {r['top1']:.2f}%, {r[col]:.2f} ms {ns.latency} per batch of "
            f"{r['infer_batch_size']}, "
            f"{r['param_count']:.3f}M params"
        )

    c = res.chosen
    where = "device measurements" if on_device else "measured now" if res.measured_now else "report"
    print(f"chosen {say(c)}: the most accurate descendant within {budget.max_latency_ms:g} ms ({where} {res.report})")
    for r in res.alternatives:
        why = "fits, less accurate" if r[col] <= budget.max_latency_ms else "more accurate, over budget"
        print(f"  alternative {say(r)} ({why})")
    if res.trained:
        print("  it was untrained (stitch at its init): trained it first (a new pool revision)")
    for n in res.notes:
        print(f"  note: {n}")
    print(
        f"child -> {res.child}"
        + (" (exported before: the same member, revision and format; nothing written)" if res.reused else "")
    )
    return 0
