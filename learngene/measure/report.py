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
    lines = [
        f"# Frontier of {meta['pool']} on {meta['device_name']}",
        "",
        f"Device {meta['device']} ({meta['device_name']}), {meta['threads']} threads, {rts}; "
        f"pool revision {meta['revision']}, data {meta['data']} ({meta['test_images']} test images); "
        f"{meta['created']}; stitches: {meta['stitches']} (column `trained`). "
        "`*`: on the accuracy / latency Pareto front of its runtime, precision and batch size. "
        "top1/top5 computed by the runtime itself; knn_top1 (torch rows): DINO's weighted kNN "
        "(k=20, T=0.07) on L2-normalised pre-logit features.",
        "",
    ]
    for w in meta.get("warnings", []):
        lines += [f"**Warning:** {w}", ""]
    cols = [
        "model",
        "trained",
        "top1",
        "top5",
        "knn_top1",
        "param_count",
        "infer_gmacs",
        "infer_step_time",
        "infer_step_time_p90",
        "infer_step_spread",
        "infer_samples_per_sec",
        "model_mib",
    ]
    cols = [c for c in cols if c in df.columns]
    keys = [k for k in ("runtime", "precision", "infer_batch_size") if k in df.columns]
    for key, g in df.groupby(keys, sort=False):
        title = " ".join(f"{k.removeprefix('infer_').replace('_', ' ')} {v}" for k, v in zip(keys, key))
        task = g[g["data"] == meta.get("data")] if "data" in g else g
        best = recommended(task, "infer_step_time_p90" if "infer_step_time_p90" in g else "infer_step_time")
        lines += [
            f"## {title}",
            "",
            *(
                [
                    f"Recommended: **{best}** (the fastest by p90 within {RECOMMEND_WITHIN:g} point of the best top1).",
                    "",
                ]
                if best
                else []
            ),
            "| | " + " | ".join(cols) + " |",
            "|---" * (len(cols) + 1) + "|",
        ]
        for _, r in g.sort_values("infer_step_time").iterrows():
            lines.append("| " + ("*" if r["pareto"] else "") + " | " + " | ".join(_cell(r, c) for c in cols) + " |")
        lines.append("")
    lines += [
        "infer_step_time: median ms per batch (p90 beside it), members timed in interleaved rounds after a "
        "warm-up; infer_step_spread: (p90 - p10) / median; param_count in millions; infer_gmacs per image; "
        "model_mib: the weights the runtime holds (the ONNX file it loads, or the module's tensors).",
        "",
    ]
    return "\n".join(lines)


RECOMMEND_WITHIN = 1.0  # points of top1: the recommended member is the fastest this close to the best


def recommended(g: pd.DataFrame, x: str = "infer_step_time_p90") -> str | None:
    """The member a user short of a budget should start from: the fastest (by ``x``) whose
    top1 is within RECOMMEND_WITHIN points of the best."""
    if g.empty:
        return None
    near = g[g.top1 >= g.top1.max() - RECOMMEND_WITHIN]
    return str(near.sort_values([x, "top1"], ascending=[True, False]).iloc[0]["model"])


def _place_labels(ax, points, fig) -> None:
    """Point labels that do not overlap: each tries a few offsets around its point and takes
    the first whose box overlaps no label placed before it."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed = []
    offsets = [(4, 4), (4, -10), (-4, 4), (-4, -10), (4, 12), (4, -18), (-4, 12), (-4, -18), (10, 0), (-10, 0)]
    for label, (x, y) in points:
        for n, (dx, dy) in enumerate(offsets):
            t = ax.annotate(
                label,
                (x, y),
                fontsize=7,
                xytext=(dx, dy),
                textcoords="offset points",
                ha="left" if dx >= 0 else "right",
            )
            box = t.get_window_extent(renderer).expanded(1.02, 1.1)
            if n == len(offsets) - 1 or not any(box.overlaps(b) for b in placed):
                placed.append(box)
                break
            t.remove()


def frontier_figure(df: pd.DataFrame, meta: dict, title: str = ""):
    """(figure, what it shows) of one runtime and precision: top1 against the p90 latency per
    batch (what `target` picks by; a line down to the median beside it) and against the
    parameters. Trained members filled, untrained (stitch at its init) hollow; the Pareto front
    where it has two or more points; the recommended member starred. Members measured on
    another task (adapted) are listed, not put on this task's accuracy axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    from matplotlib.lines import Line2D

    bs = 1 if (df.infer_batch_size == 1).any() else int(df.infer_batch_size.min())
    g = df[df.infer_batch_size == bs]
    task = meta.get("data")
    other = g[g["data"] != task] if task is not None and "data" in g else g.iloc[0:0]
    g = g.drop(other.index)
    lat = "infer_step_time_p90" if "infer_step_time_p90" in g else "infer_step_time"
    best = recommended(g, lat)
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.5), dpi=110)
    colors = {"narrow": "tab:blue", "wide": "tab:red", "stitch": "tab:gray", "child": "tab:green", "ancestor": "black"}
    trained = g["trained"].fillna(True).astype(bool) if "trained" in g else pd.Series(True, index=g.index)
    for ax, x, xlabel in (
        (
            axes[0],
            lat,
            f"latency, ms per batch of {bs} ({'p90' if lat.endswith('p90') else 'median'}: "
            "what target picks by; line to the median), log scale",
        ),
        (axes[1], "param_count", "parameters, millions (log scale)"),
    ):
        for kind, k in g.groupby("kind"):
            c = colors.get(kind, "tab:purple")
            t = trained[k.index]
            ax.scatter(k[x][t], k.top1[t], s=36, color=c, label=kind, zorder=3)
            if (~t).any():
                ax.scatter(
                    k[x][~t],
                    k.top1[~t],
                    s=36,
                    facecolors="none",
                    edgecolors=c,
                    zorder=3,
                    label=None if t.any() else kind,
                )
        if x == lat and lat != "infer_step_time" and "infer_step_time" in g:
            ax.hlines(g.top1, g["infer_step_time"], g[lat], colors="tab:gray", lw=0.8, alpha=0.6, zorder=1)
        front = g.sort_values(x)
        front = front[front.top1 >= front.top1.cummax()]  # the running best: the front along this axis
        if len(front) >= 2:
            ax.step(front[x], front.top1, where="post", color="tab:orange", lw=1.5, label="Pareto front", zorder=2)
        if best is not None:
            r = g[g.model == best].iloc[0]
            ax.scatter(
                [r[x]],
                [r.top1],
                s=220,
                marker="*",
                color="gold",
                edgecolors="black",
                zorder=4,
                label=f"recommended: {best} (fastest within {RECOMMEND_WITHIN:g} point of the best)",
            )
        ax.set_xscale("log")
        for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
            axis(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))  # 20, not 2x10^1
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"test top1 (%), {task}" if task else "test top1 (%)")
        ax.grid(True, which="both", alpha=0.3)
        _place_labels(ax, [(r["model"], (r[x], r.top1)) for _, r in g.iterrows()], fig)
    handles, labels = axes[0].get_legend_handles_labels()
    if (~trained).any():
        handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="none", markeredgecolor="tab:gray"))
        labels.append("untrained (stitch at init)")
    axes[0].legend(handles, labels, loc="best", fontsize=8)
    if len(other):
        fig.text(
            0.01,
            0.01,
            "measured on another task (not on this axis): "
            + ", ".join(f"{r['model']} {r.top1:.1f}% on {r['data']}" for _, r in other.iterrows()),
            fontsize=8,
        )
    fig.suptitle(
        f"{meta['pool']} on {meta['device_name']} ({meta['threads']} threads), revision {meta['revision']}{title}"
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig, {
        "x": lat,
        "batch_size": bs,
        "recommended": best,
        "plotted": list(g.model),
        "other_tasks": list(other.model),
        "legend": labels,
    }


def frontier_png(df: pd.DataFrame, meta: dict, path: Path, title: str = "") -> None:
    import matplotlib.pyplot as plt

    fig, _ = frontier_figure(df, meta, title)
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
