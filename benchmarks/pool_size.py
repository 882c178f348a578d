"""Stored parameters of the DeiT-Base pool recipes against SN-Net's anchors, counted on real
timm models (random init: sizes only). Writes benchmarks/results/pool_size.md.

    python benchmarks/pool_size.py
"""

from pathlib import Path

import timm

from learngene.pool import load_recipe, resolve_recipe_path  # noqa: E402
from learngene.pool.distill import STUDENT_ARCH, distill_pairs, student_args  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def count(m) -> int:
    return sum(p.numel() for p in m.parameters())


def main():
    base = timm.create_model("deit_base_patch16_224")
    lines = [
        "# Stored parameters: learngene pool vs SN-Net anchors (DeiT-Base ancestor, 1000 classes)",
        "",
        "`python benchmarks/pool_size.py`: timm models instantiated at the recipes' sizes.",
        "",
        "| pool | auxiliary models | W maps | stored total |",
        "|---|---|---|---|",
    ]
    for name in ("deit-base-d6", "deit-base-d9"):
        rec = load_recipe(resolve_recipe_path(name))
        aux = {a.name: count(timm.create_model(STUDENT_ARCH, **student_args(a, base))) for a in rec.auxiliary}
        maps = sum(len(distill_pairs(a, 12)) * (768 * a.embed_dim + a.embed_dim) for a in rec.auxiliary)
        parts = " + ".join(f"{n} {p / 1e6:.2f}M" for n, p in aux.items())
        lines.append(f"| {name} | {parts} | {maps / 1e6:.2f}M | {(sum(aux.values()) + maps) / 1e6:.2f}M |")
    anchors = {
        n: count(timm.create_model(n))
        for n in ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")
    }
    lines += [
        "",
        "SN-Net anchors: "
        + " + ".join(f"{n} {p / 1e6:.2f}M" for n, p in anchors.items())
        + f" = **{sum(anchors.values()) / 1e6:.2f}M**",
        "",
    ]
    text = "\n".join(lines)
    (RESULTS / "pool_size.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
