"""learngene's ONNX files, cached under $LEARNGENE_HOME/onnx: exported once per graph (module
structure, weights, input size, opset, exporter versions; and the calibration), quantised to
int8 by ONNX Runtime, checked against their recorded sha256 when used (a broken entry is
rebuilt with one warning), and each file's own accuracy kept beside it."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from pathlib import Path

import torch
import torch.nn as nn

from learngene.core.errors import CheckFailed, UserError
from learngene.core.io import file_sha256, home, state_dict_sha256
from learngene.core.localdir import json_safe
from learngene.core.processes import die_with_parent
from learngene.core.registries import PRECISIONS
from learngene.onnx_sessions import max_ort_diff, onnx_accuracy

EXPORT_TOL = 1e-4  # max |logit difference| accepted between eager and an fp32 export
ONNX_OPSET = 20
CALIBRATION_IMAGES = 256


def onnx_name(precision: str) -> str:
    return "model.onnx" if precision == "fp32" else f"model.{precision}.onnx"


def check_precisions(precisions) -> list[str]:
    items = [p.strip() for p in (precisions.split(",") if isinstance(precisions, str) else precisions) if p.strip()]
    bad = [p for p in items if p not in PRECISIONS]
    if bad or not items:
        raise UserError(f"unknown precision {bad[0] if bad else '(none)'!r} (choose from {', '.join(PRECISIONS)})")
    return items


def _export_fp32(model: nn.Module, path: Path, img_size: int, name: str) -> dict:
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        # the exporter narrates each pass on stdout: noise in a CLI's output
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            prog = torch.onnx.export(
                model,
                (torch.randn(2, 3, img_size, img_size),),
                dynamo=True,
                opset_version=ONNX_OPSET,
                dynamic_shapes=({0: batch},),
                input_names=["images"],
                output_names=["logits"],
                verbose=False,
            )
        prog.save(str(tmp))
        diff = max_ort_diff(model, tmp, img_size)
        if not diff <= EXPORT_TOL:
            raise CheckFailed(
                f"the ONNX export of {name} differs from the eager model by {diff:.2e} "
                f"(> {EXPORT_TOL:g}) in ONNX Runtime: not written"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"max_abs_diff": diff}


def _quantize(fp32: Path, out: Path, precision: str, calibration: torch.Tensor | None) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_name(f".{out.name}.pre-{os.getpid()}.onnx")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the quantiser logs a warning per LayerNorm it leaves alone
    try:
        quant_pre_process(str(fp32), str(pre))
        if precision == "int8":
            quantize_dynamic(str(pre), str(tmp), weight_type=QuantType.QInt8)
        else:
            if calibration is None:
                raise UserError("int8-static needs calibration images (training images of the data)")

            class Reader(CalibrationDataReader):  # the images in batches of 32
                batches = iter([{"images": calibration[i : i + 32].numpy()} for i in range(0, len(calibration), 32)])

                def get_next(self):
                    return next(self.batches, None)

            # the matrix products and the patch embedding; LayerNorm, Softmax and GELU stay in fp32
            quantize_static(
                str(pre),
                str(tmp),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gemm", "Conv"],
            )
        os.replace(tmp, out)
    finally:
        quiet.setLevel(level)
        for f in (pre, tmp):
            f.unlink(missing_ok=True)


def graph_key(model: nn.Module, img_size: int) -> str:
    """What defines a model's ONNX graph: its module structure (``repr`` names every layer,
    activation and size: a ReLU model with a GELU model's weights keys differently), its
    weights, the input size, the opset and the exporting stack's versions."""
    import onnx

    blob = json.dumps(
        [
            type(model).__module__,
            type(model).__qualname__,
            repr(model),
            state_dict_sha256(model.state_dict()),
            img_size,
            ONNX_OPSET,
            torch.__version__,
            onnx.__version__,
        ]
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _cache_paths(model: nn.Module, img_size: int) -> tuple[Path, Path]:
    cache = home() / "onnx"
    cache.mkdir(parents=True, exist_ok=True)
    key = graph_key(model, img_size)
    return cache / f"{key}-{img_size}px.onnx", cache / f"{key}-{img_size}px.json"


_WARNED_CACHE: set[str] = set()


def _cached(path: Path, meta: Path) -> dict | None:
    """A cache entry's record when the file is there and still has the sha256 recorded when it
    was written; else None (a broken entry is rebuilt, with one warning)."""
    if not (path.is_file() and meta.is_file()):
        return None
    try:
        rec = json.loads(meta.read_text())
        ok = isinstance(rec, dict) and rec.get("sha256") == file_sha256(path)
    except (OSError, ValueError, RecursionError):
        ok, rec = False, None
    if ok:
        return rec
    if str(path) not in _WARNED_CACHE:
        _WARNED_CACHE.add(str(path))
        from learngene.core.errors import warn

        warn(f"ONNX cache entry {path.name} is broken (its file or record changed since it was written): rebuilt")
    for f in (path, meta):
        f.unlink(missing_ok=True)
    return None


def _write_record(meta: Path, rec: dict) -> None:
    tmp = meta.with_name(f".{meta.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, meta)


def _export_cached_fp32(model: nn.Module, img_size: int, name: str) -> tuple[Path, dict]:
    fp32, meta = _cache_paths(model, img_size)
    rec = _cached(fp32, meta)
    if rec is None:
        rec = {**_export_fp32(model, fp32, img_size, name), "sha256": file_sha256(fp32)}
        _write_record(meta, rec)
    return fp32, rec


def _export_job(model: nn.Module, img_size: int, name: str) -> None:
    """One fp32 export into the cache, in a worker process (one thread: the workers share the cores)."""
    torch.set_num_threads(1)
    _export_cached_fp32(model, img_size, name)


MIN_JOBS_PER_WORKER = 3


def prefetch_onnx(jobs: list[tuple[nn.Module, int, str]]) -> None:
    """Export the fp32 ONNX files of several models (model, img_size, name) not cached yet,
    a worker process per core: the exporter is single-threaded Python, and a kit of 18
    members spent most of its time exporting one after the other. The workers die with
    this process (a killed kit leaves no exporter behind)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    todo = [j for j in jobs if _cached(*_cache_paths(j[0], j[1])) is None]
    workers = min(len(todo), os.cpu_count() or 1, 4)
    # a spawned worker pays an interpreter with torch and the exporter's first, slow export
    # (~7 s here) before its first file: measured, 3 small members took 21 s in 2 workers and
    # ~11 s in this process. Only a longer list repays the start.
    if workers < 2 or len(todo) < MIN_JOBS_PER_WORKER * workers:
        for job in todo:
            _export_cached_fp32(*job)
        return
    with ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent, initargs=(os.getpid(),)
    ) as ex:
        for _ in ex.map(_export_job, *zip(*todo)):
            pass


def onnx_file(
    model: nn.Module,
    img_size: int,
    precision: str = "fp32",
    calibration: torch.Tensor | None = None,
    calibration_key: str = "",
    name: str = "model",
) -> tuple[Path, dict]:
    """(path, record) of the model's ONNX file at a precision, from the cache when the same
    graph (structure, weights, input size, opset, stack) and calibration were exported
    before; every cached file is checked against the sha256 recorded when it was written."""
    import onnxruntime

    check_precisions([precision])
    fp32, rec = _export_cached_fp32(model, img_size, name)
    path = fp32
    if precision != "fp32":
        key = hashlib.sha256(calibration_key.encode()).hexdigest()[:12] if precision == "int8-static" else "dyn"
        path = fp32.with_name(fp32.name.replace(".onnx", f".{precision}-{key}.onnx"))
        meta = path.with_suffix(".json")
        qrec = _cached(path, meta)
        if qrec is None:
            _quantize(fp32, path, precision, calibration)
            qrec = {"sha256": file_sha256(path)}
            _write_record(meta, qrec)
        rec = {"sha256": qrec["sha256"]}
    return path, {
        **{k: v for k, v in rec.items() if k != "sha256"},
        "precision": precision,
        "opset": ONNX_OPSET,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "sha256": rec["sha256"],
    }


def member_onnx_files(members) -> dict[str, str]:
    """{member id: its fp32 ONNX file} for zoo members, exported (a worker per core) where the
    cache lacks them: the very files bench and the kit time."""
    prefetch_onnx([(m.model().cpu(), m.img_size, m.id) for m in members])
    return {m.id: str(onnx_file(m.model().cpu(), m.img_size, "fp32", name=m.id)[0]) for m in members}


def file_accuracy(path: Path, dm, split: str = "test") -> dict:
    """``onnx_accuracy`` of a file on a data module's split, cached by the file's sha256 and
    the data's fingerprint: kit measures every file once, and target reads the host's own
    figure back instead of trusting the accuracy a device's latency file claims."""
    sha = file_sha256(path)
    fp = hashlib.sha256(
        json.dumps([dm.fingerprint(), json_safe(dict(dm.data_config)), split], sort_keys=True).encode()
    ).hexdigest()[:16]
    cache = home() / "onnx" / "accuracy"
    cache.mkdir(parents=True, exist_ok=True)
    f = cache / f"{sha[:24]}-{fp}.json"
    try:
        rec = json.loads(f.read_text())
        if isinstance(rec, dict) and rec.get("sha256") == sha and isinstance(rec.get("top1"), (int, float)):
            return {"top1": rec["top1"], "top5": rec["top5"]}
    except (OSError, ValueError, KeyError, RecursionError):
        pass
    acc = onnx_accuracy(path, dm.eval_loader(split))
    _write_record(f, {"sha256": sha, **acc})
    return acc
