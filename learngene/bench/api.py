"""bench: measure every descendant of a pool (and exported children, the ancestor) on this
device, and write the accuracy / params / FLOPs / latency frontier as a report."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from learngene.errors import UserError
from learngene.pool import Pool

INCLUDE = ("ancestor", "children", "adapted")


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


def models_to_measure(pool: Pool, pm, include: list[str]) -> list[tuple[str, str, torch.nn.Module]]:
    """(name, kind, model): every descendant, then what --include asks for."""
    out = [(s.id, s.kind, pm.descendant(s)) for s in pm.specs]
    if "children" in include:
        import timm  # importing learngene registered the stitched architecture with timm

        for d in sorted((pool.path / "children").glob("*/config.json")):
            out.append((f"child:{d.parent.name}", "child",
                        timm.create_model(f"local-dir:{d.parent}", pretrained=True).eval()))
    if "ancestor" in include:
        from learngene.assemble.api import teacher_for

        out.append(("ancestor", "ancestor", teacher_for(pool).model.eval()))
    if "adapted" in include:
        out += adapted_models(pool)
    return out


def adapted_models(pool: Pool) -> list[tuple]:
    """(name, kind, model, task data) for every stored delta of the pool, in the form it
    ships in: LoRA merged into the weights, an adapter applied. Measured on its own task."""
    from learngene.adapt import api as adapt_api

    out = []
    for row in adapt_api.ls(pool.path):
        model, ad, base = adapt_api.apply(row["base"], row["task"], pool.path, merge=row["method"] == "lora")
        out.append((f"adapted:{row['task']}", "adapted", model.eval(), adapt_api.data_for(base, row["data"])))
    return out


def bench(
    pool: str | os.PathLike | Pool = "pools/embedded",
    device: str = "cpu",
    threads: int | None = None,
    batch_sizes=(1, 32),
    data=None,
    include=(),
    revision: str | None = "latest",
    out: str | os.PathLike | None = None,
    min_run_time: float = 0.3,
    num_workers: int | None = None,
    write: bool = True,
    progress: bool = False,
) -> BenchResult:
    """Measure top1/top5, kNN-probe top1, params, FLOPs, latency (median, p90, images/s)
    and peak memory of every descendant on ``device``; write the report into
    ``POOL/reports/<device>-<time>/`` (or ``out``) unless ``write`` is False."""
    from learngene.assemble.api import init_stitches, load_pool_model, make_datamodule, trained_ids
    from learngene.assemble.model import count_flops, count_params
    from learngene.bench.metrics import device_name, features_and_logits, knn_top1, latency, topk_accuracy
    from learngene.bench.report import mark_pareto, write_report
    from learngene.data import LearngeneDataModule

    t0 = time.perf_counter()
    dev = resolve_device(device)
    sizes = parse_batch_sizes(batch_sizes)
    include = [i for i in ([include] if isinstance(include, str) else include) if i]
    bad = [i for i in include if i not in INCLUDE]
    if bad:
        raise UserError(f"unknown --include {bad[0]!r} (choose from {', '.join(INCLUDE)})")
    set_threads(threads)
    pool = pool if isinstance(pool, Pool) else Pool.open(pool)
    created = time.strftime("%Y%m%dT%H%M%S")
    report = Path(out) if out else pool.path / "reports" / f"{dev.type}-{created}"
    if write and report.exists():
        raise UserError(f"report folder exists: {report}")

    pm, has_stitches = load_pool_model(pool, revision)
    dm = make_datamodule(pool, LearngeneDataModule(data, augment=False, num_workers=num_workers), 64, num_workers)
    if not has_stitches:  # a pool never assembled: measure the descendants as lstsq initialises them
        init_stitches(pool, pm, "lstsq", dm)
    img = pm.narrow_args["img_size"]
    models = models_to_measure(pool, pm, include)

    rev = pool.revision(revision)
    done = trained_ids(pool, rev) if has_stitches else {"narrow", "wide"}
    rows = []
    bar = tqdm(total=len(models), desc="bench", unit="model", disable=not progress)
    for name, kind, model, *task in models:
        mdm = task[0] if task else dm  # an adapted model is measured on its own task
        tr_f, _, tr_y = features_and_logits(model, mdm.eval_loader("train"), dev)
        te_f, te_logits, te_y = features_and_logits(model, mdm.eval_loader("test"), dev)
        acc = topk_accuracy(te_logits, te_y)
        # trained: False for a stitched descendant still at its stitch initialisation
        base = {"model": name, "kind": kind, "data": mdm.name, "trained": kind not in ("narrow", "wide", "stitch") or name in done,
                **acc, "knn_top1": knn_top1(tr_f, tr_y, te_f, te_y),
                "param_count": round(count_params(model) / 1e6, 4), "flops": count_flops(model.cpu(), img)}
        base["infer_gmacs"] = base["flops"] / 2e9
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
    n_trained = sum(s.kind == "stitch" and s.id in done for s in pm.specs)
    meta = {"pool": str(pool.path), "revision": (rev or {}).get("id", "r0"),
            "stitches": f"{n_trained} of {sum(s.kind == 'stitch' for s in pm.specs)} trained, the others at lstsq init",
            "device": str(dev),
            "device_name": device_name(dev), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "data": dm.name, "test_images": len(dm.dataset("test")), "batch_sizes": sizes, "created": created}
    if write:
        write_report(df, meta, report)
    return BenchResult(df, report, meta, time.perf_counter() - t0)

