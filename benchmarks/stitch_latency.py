"""Inference latency of exported stitched children against a plain timm VisionTransformer
holding the very same block modules (narrow blocks, the stitch Linear, wide blocks) and the
same embedding / norm / head: the price of being a learngene child rather than a timm model.
Also the torch.export program (model.pt2) of the same child. CPU, batch 1 and 32, measured
in one run, interleaved, torch.utils.benchmark medians.

    python benchmarks/stitch_latency.py [--pool pools/embedded] [--threads 2]

Writes benchmarks/results/stitch_latency.{md,csv}.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
from pathlib import Path

import torch
import torch.utils.benchmark as tb

RESULTS = Path(__file__).parent / "results"

from common import cpu_name  # noqa: E402


def plain_timm_twin(child) -> torch.nn.Module:
    """A timm VisionTransformer (the class itself, not a subclass) with the child's modules."""
    from timm.models.vision_transformer import VisionTransformer

    twin = VisionTransformer(
        img_size=child.patch_embed.img_size,
        patch_size=child.patch_embed.patch_size,
        embed_dim=child.patch_embed.proj.out_channels,
        depth=1,
        num_heads=1,
        num_classes=child.num_classes,
    )
    for name in ("patch_embed", "norm_pre", "patch_drop", "pos_drop", "blocks", "norm", "fc_norm", "head_drop", "head"):
        setattr(twin, name, copy.deepcopy(getattr(child, name)))
    twin.cls_token, twin.pos_embed = copy.deepcopy(child.cls_token), copy.deepcopy(child.pos_embed)
    twin.embed_dim = twin.num_features = twin.head_hidden_size = child.embed_dim
    return twin.eval()


def median_ms(fn, x, min_run_time: float) -> float:
    t = tb.Timer("fn(x)", globals={"fn": fn, "x": x}, num_threads=torch.get_num_threads())
    return t.blocked_autorange(min_run_time=min_run_time).median * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", default="pools/embedded")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-run-time", type=float, default=0.2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from learngene.formats import export_program
    from learngene.pool import Pool

    pm, _ = Pool.open(a.pool).model("latest")
    img = pm.narrow_args["img_size"]
    rows = []
    import tempfile

    for spec in pm.specs:
        if spec.kind != "stitch":
            continue
        child = pm.descendant(spec)
        twin = plain_timm_twin(child)
        with tempfile.TemporaryDirectory() as d:
            export_program(child, Path(d), img)
            prog = torch.export.load(str(Path(d) / "model.pt2")).module()
        for bs in [int(b) for b in a.batch_sizes.split(",")]:
            x = torch.randn(bs, 3, img, img)
            with torch.no_grad():
                assert torch.allclose(child(x), twin(x), atol=1e-5)
                t = {"plain": [], "child": [], "program": []}
                for _ in range(a.repeats):  # interleaved, so drift hits all three alike
                    t["plain"].append(median_ms(twin, x, a.min_run_time))
                    t["child"].append(median_ms(child, x, a.min_run_time))
                    t["program"].append(median_ms(prog, x, a.min_run_time))
            med = {k: statistics.median(v) for k, v in t.items()}
            rows.append(
                {
                    "id": spec.id,
                    "batch": bs,
                    "plain_ms": med["plain"],
                    "child_ms": med["child"],
                    "program_ms": med["program"],
                    "child_ratio": med["child"] / med["plain"],
                    "program_ratio": med["program"] / med["plain"],
                }
            )
            print(rows[-1], flush=True)
    import pandas as pd

    df = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    df.to_csv(RESULTS / "stitch_latency.csv", index=False)
    machine = f"{cpu_name()}, {os.cpu_count()} cores, {a.threads} threads, torch {torch.__version__}"
    lines = [
        "# Stitched child latency vs a plain timm ViT with the same blocks",
        "",
        f"`python benchmarks/stitch_latency.py --pool {a.pool}`. Machine: {machine}. "
        f"Median of {a.repeats} interleaved torch.utils.benchmark medians per cell; ratio = child / plain "
        "(goal: child <= 1.05x).",
        "",
        "| batch | descendants | median plain ms | median child ratio | max child ratio | median torch.export ratio |",
        "|---|---|---|---|---|---|",
    ]
    for bs, g in df.groupby("batch"):
        lines.append(
            f"| {bs} | {len(g)} | {g.plain_ms.median():.3f} | {g.child_ratio.median():.3f} | "
            f"{g.child_ratio.max():.3f} | {g.program_ratio.median():.3f} |"
        )
    lines += ["", "Per descendant: `stitch_latency.csv`.", ""]
    (RESULTS / "stitch_latency.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
