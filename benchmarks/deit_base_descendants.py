"""The descendant table of the paper's DeiT-Base pools (d6: tiny6 + base6, d9: tiny9 + base9)
at real sizes: parameters and FLOPs per image at 224x224 (torch's flop counter, random-init
weights: shapes are what matter here), and what `--size tiny|small|base` may pick.

    python benchmarks/deit_base_descendants.py

Writes benchmarks/results/deit_base_descendants.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
DEIT_BASE_PARAMS = 86_567_656  # timm deit_base_patch16_224, 1000 classes


def pool_model(depth: int):
    import timm

    from learngene.stitch.stitched import PoolModel

    common = dict(img_size=224, patch_size=16, depth=depth, num_classes=1000, mlp_ratio=4.0)
    nargs, wargs = dict(common, embed_dim=192, num_heads=3), dict(common, embed_dim=768, num_heads=12)
    torch.manual_seed(0)
    return PoolModel(
        timm.create_model("deit_tiny_patch16_224", **nargs),
        timm.create_model("deit_tiny_patch16_224", **wargs),
        nargs,
        wargs,
    )


def main():
    from learngene.assembly.select import size_budget
    from learngene.stitch.stitched import static_rows

    torch.set_num_threads(2)
    lines = [
        "# Descendants of the DeiT-Base pools at real size",
        "",
        "`python benchmarks/deit_base_descendants.py` (random-init weights; parameters and FLOPs depend on "
        "shapes only). "
        "FLOPs per 224x224 image, torch.utils.flop_counter (a multiply-add = 2 FLOPs).",
        "",
    ]
    budgets = {s: size_budget(s, DEIT_BASE_PARAMS) for s in ("tiny", "small")}
    for depth in (6, 9):
        rows = static_rows(pool_model(depth))
        lines += [
            f"## d{depth}: {len(rows)} descendants",
            "",
            "| descendant | blocks | params (M) | GFLOPs | fits |",
            "|---|---|---|---|---|",
        ]
        for r in sorted(rows, key=lambda r: r["params"]):
            fits = [s for s, b in budgets.items() if r["params"] <= b] + ["base"]
            lines.append(
                f"| {r['id']} | {r['blocks']} | {r['params'] / 1e6:.2f} | {r['flops'] / 1e9:.2f} | {', '.join(fits)} |"
            )
        lines.append("")
        print(f"d{depth} done", file=sys.stderr)
    lines.append(
        f"Budgets: tiny <= {budgets['tiny'] / 1e6:.2f}M, small <= {budgets['small'] / 1e6:.2f}M (DeiT-Ti / DeiT-S "
        "against DeiT-Base's 86.6M); base: any."
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "deit_base_descendants.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
