"""`learngene export MODEL`: any member in the format a device runs."""

from __future__ import annotations

import json

from learngene.cli.common import PRECISION_HELP, add_data_arg, add_pool_arg, call
from learngene.core.errors import UserError
from learngene.core.registries import FORMATS

HELP = "write any member (descendant, child, ancestor, grown, adapted) as timm / torch.export / ONNX (fp32, int8)"


def add_arguments(sp) -> None:
    sp.add_argument(
        "model",
        metavar="MODEL",
        nargs="?",
        default=None,
        help="POOL:MEMBER, a child or descendant id (with --pool), local-dir:DIR or DIR, embedded, a timm name",
    )
    sp.add_argument("--model", dest="model_flag", metavar="MODEL", help="the same, as a flag (as in every other verb)")
    w = sp.add_mutually_exclusive_group()
    w.add_argument("--pretrained", action="store_true", help="timm's pretrained weights, from its cache")
    w.add_argument("--checkpoint", metavar="FILE", help="weights for a timm name")
    add_pool_arg(sp)
    sp.add_argument("--format", default="onnx", choices=FORMATS.names, help="default onnx")
    sp.add_argument("--precision", default="fp32", help=f"{PRECISION_HELP}: onnx only (default fp32)")
    sp.add_argument(
        "--int8",
        nargs="?",
        const="int8",
        choices=["int8", "dynamic", "static"],
        help="shorthand: --int8 (dynamic) or --int8 static",
    )
    add_data_arg(sp, "data for calibration and the ONNX file's accuracy (default: the embedded digits)", workers=False)
    sp.add_argument(
        "--out", required=True, metavar="DIR", help="the export folder (a timm local-dir plus the format's file)"
    )
    sp.add_argument("--force", action="store_true", help="replace an existing folder")
    sp.add_argument("--json", action="store_true")


def run(ns) -> int:
    from learngene.api import export

    if (ns.model is None) == (ns.model_flag is None):
        raise UserError("export: give the model once, as MODEL or --model MODEL")
    ns.model = ns.model or ns.model_flag
    precision = {"int8": "int8", "dynamic": "int8", "static": "int8-static"}.get(ns.int8, ns.precision)
    out = call(export, ns, ns.model, fmt=ns.format, precision=precision)
    rec = out.record
    if ns.json:
        print(json.dumps(out.to_dict(), indent=2))
        return 0
    acc = rec.get("accuracy")
    extra = (f", max |logit diff| vs eager {rec['max_abs_diff']:.1e}" if "max_abs_diff" in rec else "") + (
        f", test top1 {acc['top1']:.2f}% (measured by ONNX Runtime on this file)" if acc else ""
    )
    print(f"{ns.model} -> {out.out} ({ns.format}{' ' + precision if ns.format == 'onnx' else ''}{extra})")
    return 0
