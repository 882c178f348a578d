"""`learngene grow`: a larger model that computes what the smaller one did."""

from __future__ import annotations

import json

from learngene.cli.common import add_data_arg, add_trainer_args, call
from learngene.core.registries import GROWTH_METHODS

HELP = "make a model larger without changing what it computes"


def add_arguments(sp) -> None:
    sp.add_argument(
        "--model",
        "--from",
        dest="source",
        required=True,
        metavar="MODEL",
        help="embedded | a timm name (with --checkpoint / --pretrained) | local-dir:DIR or DIR | POOL:MEMBER",
    )
    sp.add_argument("--method", required=True, choices=GROWTH_METHODS.names)
    sp.add_argument("--embed-dim", type=int, default=None, help="residual width (default: the model's)")
    sp.add_argument("--depth", type=int, default=None, help="number of blocks (default: the model's)")
    sp.add_argument("--heads", type=int, default=None, help="attention heads (default: keep the head size)")
    sp.add_argument("--head-dim", type=int, default=None, help="size of each head (default: keep it)")
    sp.add_argument("--mlp-ratio", type=float, default=None, help="MLP hidden size / width (default: the model's)")
    w = sp.add_mutually_exclusive_group()
    w.add_argument(
        "--checkpoint", metavar="FILE", help="weights for a timm name (.safetensors or weights-only torch file)"
    )
    w.add_argument("--pretrained", action="store_true", help="timm's pretrained weights, from its cache")
    add_data_arg(sp, "ImageFolder LiGO trains its operator on (default: the embedded digits)", workers=False)
    sp.add_argument("--steps", type=int, default=100, help="LiGO operator training steps (default 100)")
    sp.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="net2net: relative noise on the copies (breaks symmetry; no longer exact)",
    )
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", required=True, metavar="DIR", help="the grown model's timm local-dir folder")
    sp.add_argument("--force", action="store_true", help="replace an existing folder")
    sp.add_argument("--json", action="store_true", help="print the result as JSON")
    add_trainer_args(sp)


def run(ns) -> int:
    from learngene.api import grow

    res = call(grow, ns, ns.source, progress=not ns.quiet)
    if ns.json:
        print(json.dumps(res, indent=2))
        return 0
    t = res["target"]
    print(
        f"grew {ns.source} ({res['source_params']:,} params) by {ns.method} to width {t['embed_dim']}, depth "
        f"{t['depth']}, "
        f"{t['num_heads']} heads of {t['head_dim']}, MLP {t['mlp_hidden']}: {res['params']:,} params in "
        f"{res['seconds']} s"
    )
    print(f"max |logit change| on random images: {res['max_logit_change']:.2e}")
    print(f"saved {res['out']} (timm.create_model('local-dir:{res['out']}', pretrained=True))")
    return 0
