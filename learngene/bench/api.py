"""bench: measure members of the zoo (a pool's descendants, its children, its ancestor,
adapted models) on this device, and write the accuracy / params / FLOPs / latency frontier
as a report. Which members a pool's bench takes is `learngene.deploy.bench_pool`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from learngene.core.errors import UserError


@dataclass
class BenchResult:
    df: pd.DataFrame  # one row per model and batch size
    report: Path  # where the report is (or would go, with write=False)
    meta: dict = field(default_factory=dict)
    seconds: float = 0.0


def parse_batch_sizes(text: str | list | tuple) -> list[int]:
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        sizes = [int(b) for b in items]
    except ValueError:
        raise UserError(f"--batch-sizes must be positive integers like 1,32, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise UserError(f"--batch-sizes must be positive integers like 1,32, got {text!r}")
    return sizes


def resolve_device(device: str) -> torch.device:
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"unknown --device {device!r} (cpu or cuda)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device here")
    return torch.device(device)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def bench(
    members,
    dm,
    *,
    device: str = "cpu",
    threads: int | None = None,
    batch_sizes=(1, 32),
    out: str | os.PathLike | None = None,
    min_run_time: float = 0.3,
    meta: dict | None = None,
    write: bool = True,
    progress: bool = False,
) -> BenchResult:
    """Measure top1/top5, kNN-probe top1, params, FLOPs, latency (median, p90, images/s)
    and peak memory of every member (`learngene.zoo.Member`) on ``device``, each on ``dm``
    (or, for a member made for another task, on its own task's data); write the report into
    ``out`` unless ``write`` is False. ``meta`` (what was measured) goes into the report."""
    from learngene.bench.metrics import device_name, features_and_logits, knn_top1, latency, topk_accuracy
    from learngene.bench.report import mark_pareto, write_report
    from learngene.core.data import data_for

    t0 = time.perf_counter()
    dev = resolve_device(device)
    sizes = parse_batch_sizes(batch_sizes)
    set_threads(threads)
    created = time.strftime("%Y%m%dT%H%M%S")
    report = Path(out) if out else Path("reports") / f"{dev.type}-{created}"
    if write and report.exists():
        raise UserError(f"report folder exists: {report}")
    tasks = {}
    rows = []
    bar = tqdm(total=len(members), desc="bench", unit="model", disable=not progress)
    for m in members:
        if m.task is None:
            mdm = dm
        else:  # a member made for another task is measured on that task
            mdm = tasks.get(m.task) or tasks.setdefault(m.task, data_for(m.task, m.data_config, augment=False))
        model = m.model()
        m.static()
        tr_f, _, tr_y = features_and_logits(model, mdm.eval_loader("train"), dev)
        te_f, te_logits, te_y = features_and_logits(model, mdm.eval_loader("test"), dev)
        acc = topk_accuracy(te_logits, te_y)
        # trained: False for a stitched descendant still at its stitch initialisation
        base = {"model": m.id, "kind": m.kind, "data": mdm.name, "trained": m.trained,
                **acc, "knn_top1": knn_top1(tr_f, tr_y, te_f, te_y),
                "param_count": round(m.params / 1e6, 4), "flops": m.flops}
        base["infer_gmacs"] = base["flops"] / 2e9
        img = m.img_size
        for bs in sizes:
            lat = latency(model, bs, img, dev, min_run_time=min_run_time)
            rows.append({**base, "infer_img_size": img, "infer_batch_size": bs,
                         "infer_samples_per_sec": round(lat["samples_per_sec"], 2),
                         "infer_step_time": lat["median_s"] * 1e3, "infer_step_time_p90": lat["p90_s"] * 1e3,
                         "infer_peak_mib": lat["peak_mib"]})
        model.cpu()
        bar.update(1)
    bar.close()
    df = pd.DataFrame(rows)
    df["pareto"] = mark_pareto(df)
    meta = {**(meta or {}), "device": str(dev), "device_name": device_name(dev), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "data": dm.name, "test_images": len(dm.dataset("test")), "batch_sizes": sizes,
            "created": created}
    if write:
        write_report(df, meta, report)
    return BenchResult(df, report, meta, time.perf_counter() - t0)
