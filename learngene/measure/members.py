"""bench: measure members of the zoo (a pool's descendants, its children, its ancestor,
adapted models) on this device, and write the accuracy / params / FLOPs / latency frontier
as a report. Which members a pool's bench takes is `learngene.api.bench`."""

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
    df: pd.DataFrame  # one row per member, runtime, precision and batch size
    report: Path  # where the report is (or would go, with write=False)
    meta: dict = field(default_factory=dict)
    seconds: float = 0.0


def parse_batch_sizes(text: str | list | tuple) -> list[int]:
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        sizes = [int(b) for b in items]
    except (TypeError, ValueError):
        raise UserError(f"--batch-sizes must be positive integers like 1,32, got {text!r}") from None
    if not sizes or len(sizes) > 16:
        raise UserError(f"--batch-sizes must be 1 to 16 positive integers like 1,32, got {text!r}")
    from learngene.core.limits import batch_size

    return [batch_size(b, "--batch-sizes") for b in sizes]


def resolve_device(device: str) -> torch.device:
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"unknown --device {device!r} (cpu or cuda)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device here")
    return torch.device(device)


def set_threads(threads: int | None) -> None:
    from learngene.core.limits import threads as bounded

    if threads is not None:
        torch.set_num_threads(bounded(threads))


def bench(
    members,
    dm,
    *,
    runtimes=("torch",),
    precisions=("fp32",),
    device: str = "cpu",
    threads: int | None = None,
    batch_sizes=(1, 32),
    out: str | os.PathLike | None = None,
    min_run_time: float = 0.3,
    meta: dict | None = None,
    write: bool = True,
    progress: bool = False,
) -> BenchResult:
    """One row per (member, runtime, precision, batch size): top1/top5 computed by that
    runtime on the test split (each member on ``dm``, or on its own task's data), kNN-probe
    top1 of its features (torch rows), params, FLOPs, and latency measured by that runtime
    (median, p90, spread, images/s, peak memory); the members of one runtime and precision
    are timed in interleaved rounds. The report goes to ``out`` unless ``write`` is False."""
    from learngene.core.data import data_for
    from learngene.core.evaluation import features_and_logits, knn_top1
    from learngene.formats import calibration_of as calibrate
    from learngene.measure.metrics import device_name, topk_accuracy
    from learngene.measure.probe import load_average, time_interleaved, timing_warnings
    from learngene.measure.report import mark_pareto, write_report
    from learngene.measure.runtimes import plan

    t0 = time.perf_counter()
    dev = resolve_device(device)
    sizes = parse_batch_sizes(batch_sizes)
    pairs = plan(runtimes, precisions)
    set_threads(threads)
    n_threads = torch.get_num_threads()
    created = time.strftime("%Y%m%dT%H%M%S")
    report = Path(out) if out else Path("reports") / f"{dev.type}-{created}"
    if write and report.exists():
        raise UserError(f"report folder exists: {report}")
    tasks = {None: dm}
    calibration = {}

    def data_of(m):
        if m.task not in tasks:  # a member made for another task is measured on that task
            tasks[m.task] = data_for(m.task, m.data_config, augment=False)
        return tasks[m.task]

    def calibration_of(mdm):
        if mdm.name not in calibration:
            calibration[mdm.name] = calibrate(mdm)
        return calibration[mdm.name]

    base = {}
    bar = tqdm(total=len(members) * (len(pairs) + 1), desc="bench: accuracy", unit="model", disable=not progress)
    for m in members:
        mdm = data_of(m)
        m.static()
        tr_f, _, tr_y = features_and_logits(m.model(), mdm.eval_loader("train"), dev)
        te_f, _, te_y = features_and_logits(m.model(), mdm.eval_loader("test"), dev)
        m.model().cpu()
        base[m.id] = {
            "model": m.id,
            "kind": m.kind,
            "data": mdm.name,
            "trained": m.trained,
            "knn_top1": knn_top1(tr_f, tr_y, te_f, te_y),
            "param_count": round(m.params / 1e6, 4),
            "flops": m.flops,
            "infer_gmacs": m.flops / 2e9,
            "infer_img_size": m.img_size,
        }
        bar.update(1)
    rows, warns = [], []
    if any(rt.name == "onnxruntime" for rt, _ in pairs):  # every ONNX file at once, a worker per core
        from learngene.onnx_cache import prefetch_onnx

        prefetch_onnx([(m.model().cpu(), m.img_size, m.id) for m in members])
    for rt, prec in pairs:
        runners = {}
        for m in members:
            mdm = data_of(m)
            runner = rt.runner(m, prec, dev, n_threads, calibration_of(mdm) if prec == "int8-static" else None)
            logits, labels = [], []
            for x, y in mdm.eval_loader("test"):
                logits.append(runner.logits(x))
                labels.append(y)
            runners[m.id] = (runner, topk_accuracy(torch.cat(logits), torch.cat(labels)))
            bar.update(1)
        for bs in sizes:
            calls = {mid: r.call(bs) for mid, (r, _) in runners.items()}
            load0 = load_average()
            stats = time_interleaved(calls, min_run_time=min_run_time)
            warns += [
                f"{rt.name} {prec} batch {bs}: {w}" for w in timing_warnings(stats, load0, load_average(), n_threads)
            ]
            for mid, (runner, acc) in runners.items():
                st = stats[mid]
                rows.append(
                    {
                        **base[mid],
                        "runtime": rt.name,
                        "precision": prec,
                        **acc,
                        "knn_top1": base[mid]["knn_top1"] if rt.name == "torch" else None,
                        "infer_batch_size": bs,
                        "infer_samples_per_sec": round(bs / st["median_s"], 2),
                        "infer_step_time": st["median_s"] * 1e3,
                        "infer_step_time_p90": st["p90_s"] * 1e3,
                        "infer_step_spread": round(st["spread"], 4),
                        "model_mib": round(runner.model_mib, 3),
                        "file_sha256": runner.file_sha256,
                    }
                )
        for m in members:
            m.model().cpu()
    bar.close()
    df = pd.DataFrame(rows)
    df["pareto"] = mark_pareto(df)
    meta = {
        **(meta or {}),
        "device": str(dev),
        "device_name": device_name(dev),
        "threads": n_threads,
        "torch": torch.__version__,
        "runtimes": {rt.name: rt.version for rt, _ in pairs},
        "precisions": sorted({p for _, p in pairs}),
        "data": dm.name,
        "test_images": len(dm.dataset("test")),
        "batch_sizes": sizes,
        "min_run_time_s": min_run_time,
        "warnings": warns,
        "created": created,
    }
    if write:
        report = write_report(df, meta, report, unique=out is None)
    return BenchResult(df, report, meta, time.perf_counter() - t0)
