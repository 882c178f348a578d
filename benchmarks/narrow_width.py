"""Why the embedded narrow width is 48: build the embedded pool with the narrow model at
width 32 (a quarter of the ancestor's, 2 heads) and 48 (3 heads), everything else the
embedded recipe, and measure the narrow model and the least-squares stitched descendants
right after stitch initialisation. Writes benchmarks/results/narrow_width.md.

    python benchmarks/narrow_width.py
"""

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

from common import init_accuracy  # noqa: E402


def main():
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for width, heads in ((32, 2), (48, 3)):
            out = Path(d) / f"n{width}"
            r = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "learngene.cli",
                    "build-pool",
                    "-q",
                    "--out",
                    str(out),
                    "--set",
                    f"auxiliary.narrow.embed_dim={width}",
                    "--set",
                    f"auxiliary.narrow.num_heads={heads}",
                ],
                capture_output=True,
                text=True,
            )
            if r.returncode:
                sys.exit(r.stderr)
            aux = json.loads((out / "pool.json").read_text())["auxiliary"]["narrow"]
            acc = init_accuracy(out)["lstsq"]
            st = [v["test"] for k, v in acc.items() if k.startswith("stitch")]
            rows.append(
                (
                    width,
                    heads,
                    aux["params"],
                    aux["metrics"]["test_top1"],
                    statistics.mean(v["val"] for v in acc.values()),
                    statistics.mean(v["test"] for v in acc.values()),
                    statistics.mean(st),
                    min(st),
                )
            )
    lines = [
        "# Narrow width of the embedded pool",
        "",
        "`python benchmarks/narrow_width.py` (seed 0; lstsq stitch init, no training).",
        "",
        "| narrow width / heads | narrow params | narrow test top1 | mean val top1 (18) | mean test top1 (18) | "
        "mean test stitched (16) | min stitched |",
        "|---|---|---|---|---|---|---|",
    ]
    for w, h, p, a, v, t, s, m in rows:
        lines.append(f"| {w} / {h} | {p:,} | {a:.2f} | {v:.2f} | {t:.2f} | {s:.2f} | {m:.2f} |")
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "narrow_width.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
