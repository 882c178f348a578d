"""The frontier report: the Pareto front of accuracy against latency for each runtime and
precision, and its files (frontier.csv / .json / .md, one PNG per runtime and precision),
written into a staging folder renamed into place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from learngene.core.io import staged_folder

# rows are comparable only within these: a batch size, a task (adapted models have their
# own), a runtime and a precision (a frontier never mixes them)
GROUP = ["infer_batch_size", "data", "runtime", "precision"]


def mark_pareto(df: pd.DataFrame, acc: str = "top1", cost: str = "infer_step_time") -> pd.Series:
    """True for the rows no other row of their group beats: at least as accurate and at most
    as slow, strictly better in one of the two."""
    out = pd.Series(False, index=df.index)
    keys = [k for k in GROUP if k in df.columns]
    for _, g in df.groupby(keys):
        for i, r in g.iterrows():
            better = (g[acc] >= r[acc]) & (g[cost] <= r[cost]) & ((g[acc] > r[acc]) | (g[cost] < r[cost]))
            out[i] = not better.any()
    return out


def _cell(r, c) -> str:
    v = r[c]
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return ""
    if c in ("infer_step_time", "infer_step_time_p90", "infer_gmacs"):
        return f"{v:.3f}"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def frontier_md(df: pd.DataFrame, meta: dict) -> str:
    rts = ", ".join(f"{k} {v}" for k, v in meta.get("runtimes", {"torch": meta.get("torch")}).items())
    lines = [f"# Frontier of {meta['pool']} on {meta['device_name']}", "",
             f"Device {meta['device']} ({meta['device_name']}), {meta['threads']} threads, {rts}; "
             f"pool revision {meta['revision']}, data {meta['data']} ({meta['test_images']} test images); "
             f"{meta['created']}; stitches: {meta['stitches']} (column `trained`). "
             "`*`: on the accuracy / latency Pareto front of its runtime, precision and batch size. "
             "top1/top5 computed by the runtime itself; knn_top1 (torch rows): DINO's weighted kNN "
             "(k=20, T=0.07) on L2-normalised pre-logit features.", ""]
    for w in meta.get("warnings", []):
        lines += [f"**Warning:** {w}", ""]
    cols = ["model", "trained", "top1", "top5", "knn_top1", "param_count", "infer_gmacs", "infer_step_time",
            "infer_step_time_p90", "infer_step_spread", "infer_samples_per_sec", "infer_peak_mib"]
    cols = [c for c in cols if c in df.columns]
    keys = [k for k in ("runtime", "precision", "infer_batch_size") if k in df.columns]
    for key, g in df.groupby(keys, sort=False):
        title = " ".join(f"{k.removeprefix('infer_').replace('_', ' ')} {v}" for k, v in zip(keys, key))
        lines += [f"## {title}", "", "| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for _, r in g.sort_values("infer_step_time").iterrows():
            lines.append("| " + ("*" if r["pareto"] else "") + " | " + " | ".join(_cell(r, c) for c in cols) + " |")
        lines.append("")
    lines += ["infer_step_time: median ms per batch (p90 beside it), members timed in interleaved rounds after a "
              "warm-up; infer_step_spread: (p90 - p10) / median; param_count in millions; infer_gmacs per image; "
              "infer_peak_mib: peak memory of a batch above what was in use before it.", ""]
    return "\n".join(lines)


def frontier_png(df: pd.DataFrame, meta: dict, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    bs = 1 if (df.infer_batch_size == 1).any() else int(df.infer_batch_size.min())
    g = df[df.infer_batch_size == bs]
    fig, axes = plt.subplots(1, 2, figsize=(14, 6), dpi=110)
    colors = {"narrow": "tab:blue", "wide": "tab:red", "stitch": "tab:gray", "child": "tab:green", "ancestor": "black"}
    for ax, x, xlabel in ((axes[0], "infer_step_time", f"latency, ms per batch of {bs} (median, log scale)"),
                          (axes[1], "param_count", "parameters, millions (log scale)")):
        for kind, k in g.groupby("kind"):
            ax.scatter(k[x], k.top1, s=36, color=colors.get(kind, "tab:purple"), label=kind, zorder=3)
        front = g.sort_values(x)
        front = front[front.top1 >= front.top1.cummax()]  # the running best: the front along this axis
        ax.step(front[x], front.top1, where="post", color="tab:orange", lw=1.5, label="Pareto front", zorder=2)
        for _, r in g.iterrows():
            ax.annotate(r["model"], (r[x], r.top1), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
            axis(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))  # 20, not 2x10^1
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test top1 (%)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{meta['pool']} on {meta['device_name']} ({meta['threads']} threads), revision {meta['revision']}{title}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(df: pd.DataFrame, meta: dict, out: Path, unique: bool = False) -> Path:
    """frontier.{csv,json,md}, frontier-RUNTIME-PRECISION.png for each runtime and precision,
    and frontier.png (the first of them) in ``out`` (the caller checked it does not exist);
    nothing is left behind if writing fails. ``unique``: the name is learngene's own (a time),
    so a report another bench wrote there meanwhile gets this one a -2, -3 suffix; a name the
    user gave is never replaced."""
    if unique:
        n = 2
        base = out
        while out.exists():
            out, n = base.with_name(f"{base.name}-{n}"), n + 1
    with staged_folder(out, replace=False) as stage:
        df.to_csv(stage / "frontier.csv", index=False)
        # full precision (pandas' to_json rounds to 10 decimals), so target compares a
        # budget against exactly the latencies bench measured; NaN is written as null
        rows = df.astype(object).where(df.notna(), None).to_dict("records")
        (stage / "frontier.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        (stage / "frontier.md").write_text(frontier_md(df, meta))
        for n, ((rt, prec), g) in enumerate(df.groupby(["runtime", "precision"], sort=False)):
            frontier_png(g, meta, stage / f"frontier-{rt}-{prec}.png", f", {rt} {prec}")
            if n == 0:
                shutil.copyfile(stage / f"frontier-{rt}-{prec}.png", stage / "frontier.png")
    return out
