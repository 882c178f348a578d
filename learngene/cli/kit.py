"""`learngene kit`: a folder to copy to the device, measured there by its probe.py."""

from __future__ import annotations

from learngene.cli.common import add_data_arg, add_pool_arg, call, say

HELP = "write a device kit: every member as ONNX, kit.json and probe.py (needs only onnxruntime + numpy)"


def add_arguments(sp) -> None:
    add_pool_arg(sp)
    sp.add_argument("--out", required=True, metavar="DIR", help="the kit folder")
    sp.add_argument(
        "--precision",
        "--precisions",
        dest="precision",
        default="fp32,int8",
        help="fp32, int8, int8-static, comma separated (default fp32,int8)",
    )
    sp.add_argument(
        "--batch-sizes",
        "--batch-size",
        dest="batch_sizes",
        default="1,8",
        help="batch sizes probe.py times (default 1,8)",
    )
    sp.add_argument("--members", default=None, help="only these descendants, comma separated (default: all)")
    add_data_arg(sp, workers=False)
    sp.add_argument("--force", action="store_true", help="replace an existing kit folder")


def run(ns) -> int:
    from learngene.api import kit

    out = call(kit, ns, ns.pool, precisions=ns.precision, progress=say(ns))
    print(
        f"kit: {out} (copy it to the device, then run there: python probe.py [--threads N] --out latency.json; "
        f"back here: learngene target --pool {ns.pool} --latency-file latency.json --max-latency-ms X)"
    )
    return 0
