"""The formats a model is written in (a registry), and ONNX files for the runtimes devices use.

Every export folder is a timm local-dir (config.json + model.safetensors: timm loads it after
``import learngene``, plain timm for a plain ViT); a format adds its file:

    timm   the local-dir alone
    pt2    + model.pt2, a torch.export program (dynamic batch) that runs with torch alone
    onnx   + model.onnx (torch.onnx.export(dynamo=True), dynamic batch) or, for an int8
           precision, model.int8.onnx / model.int8-static.onnx, and export.json

Each file is checked against the eager model before the folder is put in place (max |logit
difference| <= 1e-4 for fp32; the program for pt2, ONNX Runtime for onnx); a failed check is a
one-line `CheckFailed` naming the model and the difference, and nothing is written.

Precisions (ONNX Runtime's quantisation): ``int8`` is dynamic (weights int8, activations
quantised per batch at run time: no calibration), ``int8-static`` is static QDQ with per-
channel weights, calibrated on training images (what edge NPUs want). An int8 file is not
held to the fp32 tolerance: its own accuracy is measured, never copied from the fp32 one.

ONNX files are cached under $LEARNGENE_HOME/onnx, keyed by everything that defines the graph
(module structure, weights, input size, opset, exporter versions; and the calibration), each
checked against its recorded sha256 when used (a broken entry is rebuilt with one warning),
so bench, kit and target export a member once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
from pathlib import Path

import torch
import torch.nn as nn

from learngene.core.errors import CheckFailed, UserError
from learngene.core.io import as_os_errors, check_output, ensure_space, file_sha256, home, state_dict_sha256
from learngene.core.localdir import json_safe, save_local_dir
from learngene.core.processes import die_with_parent
from learngene.core.registries import FORMATS, PRECISIONS

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


# --------------------------------------------------------------------------- torch.export


def export_program(model: nn.Module, folder: Path, img_size: int, in_chans: int = 3) -> float:
    """Write folder/model.pt2 (batch size dynamic) and return the max |difference| between
    its logits and the eager model's on a random batch."""
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = torch.randn(2, in_chans, img_size, img_size)
    with torch.no_grad():
        ep = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    path = folder / "model.pt2"
    torch.export.save(ep, str(path))
    loaded = torch.export.load(str(path)).module()
    x = torch.randn(3, in_chans, img_size, img_size)
    with torch.no_grad():
        return (loaded(x) - model(x)).abs().max().item()


# --------------------------------------------------------------------------- ONNX


def _session_options(threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    return so


def ort_session(path, threads: int | None = None, providers=("CPUExecutionProvider",)):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), _session_options(threads), providers=list(providers))


def member_onnx_files(members) -> dict[str, str]:
    """{member id: its fp32 ONNX file} for zoo members, exported (a worker per core) where the
    cache lacks them: the very files bench and the kit time."""
    prefetch_onnx([(m.model().cpu(), m.img_size, m.id) for m in members])
    return {m.id: str(onnx_file(m.model().cpu(), m.img_size, "fp32", name=m.id)[0]) for m in members}


def shared_ort_sessions(paths: dict, threads: int | None = None) -> tuple[dict, dict]:
    """({name: session}, stats): an ONNX Runtime session per file whose initializers with the
    same bytes (a block two members share exports the same weights under any name) are held
    once, handed to every session by `SessionOptions.add_initializer`, so that the sessions of
    a pool's members together hold about the pool's weights, not their sum. Prepacking is off:
    ORT would otherwise keep a packed copy of every MatMul weight per session.
    stats: the floating-point initializers (weights) and their bytes as the files hold them
    (``bytes_files``) and as held here; shapes and other small constants stay in each graph."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    held: dict[str, tuple] = {}  # content key -> (array, OrtValue): both alive as long as the sessions
    sessions, count, total = {}, 0, 0
    for name, path in paths.items():
        model = onnx.load(str(path))
        so = _session_options(threads)
        so.add_session_config_entry("session.disable_prepacking", "1")
        so.enable_cpu_mem_arena = False  # an arena per session grows to its largest batch and stays
        for init in model.graph.initializer:
            arr = numpy_helper.to_array(init)
            if arr.dtype.kind != "f" or arr.size < 64:
                continue  # shapes and axes stay in the graph: ORT's optimiser folds them as constants
            key = hashlib.sha256(f"{arr.dtype}{arr.shape}".encode() + arr.tobytes()).hexdigest()
            if key not in held:
                arr = np.ascontiguousarray(arr)
                held[key] = (arr, ort.OrtValue.ortvalue_from_numpy(arr))
            so.add_initializer(init.name, held[key][1])
            count, total = count + 1, total + arr.nbytes
        del model  # the file itself is what ORT reads: a session made from bytes keeps them for good
        sessions[name] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        sessions[name]._learngene_held = held  # the shared values outlive every session that reads them
    stats = {
        "initializers": count,
        "initializers_held": len(held),
        "bytes_files": total,
        "bytes_held": sum(a.nbytes for a, _ in held.values()),
    }
    return sessions, stats


def max_ort_diff(model: nn.Module, path: Path, img_size: int, seed: int = 0) -> float:
    """max |logit difference| between ONNX Runtime on ``path`` and the eager model (batches of 1 and 3)."""
    sess = ort_session(path, threads=1)
    g = torch.Generator().manual_seed(seed)
    diff = 0.0
    for n in (1, 3):
        x = torch.randn(n, 3, img_size, img_size, generator=g)
        with torch.no_grad():
            ref = model.eval()(x).numpy()
        diff = max(diff, float(abs(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0] - ref).max()))
    return diff


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


def prefetch_onnx(jobs: list[tuple[nn.Module, int, str]]) -> None:
    """Export the fp32 ONNX files of several models (model, img_size, name) not cached yet,
    a worker process per core: the exporter is single-threaded Python, and a kit of 18
    members spent most of its time exporting one after the other. The workers die with
    this process (a killed kit leaves no exporter behind)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    todo = [j for j in jobs if _cached(*_cache_paths(j[0], j[1])) is None]
    workers = min(len(todo), os.cpu_count() or 1, 4)
    if workers < 2:
        for job in todo:
            _export_job(*job)
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


def onnx_accuracy(path: Path, loader, threads: int | None = None) -> dict:
    """top1 / top5 (percent) of an ONNX file in ONNX Runtime over a loader: the file's own
    accuracy (an int8 file's is never copied from the fp32 one)."""
    from learngene.core.evaluation import topk_hits

    sess = ort_session(path, threads)
    name = sess.get_inputs()[0].name
    hits, n = {1: 0, 5: 0}, 0
    for x, y in loader:
        logits = torch.from_numpy(sess.run(None, {name: x.numpy()})[0])
        for k, h in topk_hits(logits, y).items():
            hits[k] += h
        n += len(y)
    return {f"top{k}": round(100 * h / max(n, 1), 2) for k, h in hits.items()}


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


def calibration_of(dm) -> tuple[torch.Tensor, str]:
    """The training images static int8 calibrates on, and a key naming them (for the cache)."""
    from learngene.core.data import sample_images

    fp = dm.fingerprint()
    return sample_images(dm, CALIBRATION_IMAGES), f"{fp.get('files')}|{fp.get('counts')}|{dm.img_size}"


def onnx_options(dm, precision: str) -> dict:
    """What the onnx format needs of the data: calibration images (int8-static) and the
    evaluation of the written file on the test split."""
    images, key = calibration_of(dm) if precision == "int8-static" else (None, "")
    return {
        "precision": precision,
        "calibration": images,
        "calibration_key": key,
        "evaluate": lambda path: onnx_accuracy(path, dm.eval_loader("test")),
    }


# --------------------------------------------------------------------------- formats


def write_timm(model, folder, img_size, **_) -> dict:
    return {}


def write_pt2(model, folder, img_size, name="model", **_) -> dict:
    diff = export_program(model, folder, img_size)
    if not diff <= EXPORT_TOL:
        raise CheckFailed(f"the torch.export program of {name} differs from the eager model by {diff:.2e}: not written")
    return {"export": {"file": "model.pt2", "format": "torch.export", "max_abs_diff": diff}}


def write_onnx(
    model, folder, img_size, precision="fp32", calibration=None, calibration_key="", name="model", evaluate=None, **_
) -> dict:
    out = folder / onnx_name(precision)
    for attempt in range(2):
        path, rec = onnx_file(model, img_size, precision, calibration, calibration_key, name)
        shutil.copyfile(path, out)
        if file_sha256(out) != rec["sha256"]:
            raise CheckFailed(f"the ONNX file of {name} changed while it was copied from the cache: not written")
        if precision != "fp32":
            break
        # the difference of this very file against the model being exported, not a figure cached
        # with the file: a cache entry swapped for another model's is caught here, dropped and rebuilt
        diff = max_ort_diff(model, out, img_size)
        if diff <= EXPORT_TOL:
            rec["max_abs_diff"] = diff
            break
        if attempt == 0:
            from learngene.core.errors import warn

            warn(f"ONNX cache entry {path.name} does not compute {name} (max |logit diff| {diff:.2e}): rebuilt")
            for f in (path, path.with_suffix(".json")):
                f.unlink(missing_ok=True)
            continue
        raise CheckFailed(
            f"the ONNX file of {name} differs from the eager model by {diff:.2e} (> {EXPORT_TOL:g}) "
            "in ONNX Runtime: not written"
        )
    rec = {"file": onnx_name(precision), "format": "onnx", **rec}
    if evaluate is not None:  # the accuracy of this very file, measured by ONNX Runtime
        rec["accuracy"] = evaluate(folder / onnx_name(precision))
    (folder / "export.json").write_text(json.dumps(json_safe(rec), indent=2))
    return {"export": rec}


# the writers by name: learngene.core.registries.FORMATS, each (model, folder, img_size, **options) ->
# metadata for config.json


def export_model(
    model: nn.Module,
    out: Path,
    architecture: str,
    model_args: dict,
    pretrained_cfg: dict,
    meta: dict,
    *,
    fmt: str = "pt2",
    force: bool = False,
    what: str = "child",
    **options,
) -> Path:
    """Write ``model`` as a timm local-dir plus its format's file, atomically (built beside
    the target, renamed into place)."""
    FORMATS.check(fmt, "--format")
    out = check_output(out, force, what)
    img = int(model_args.get("img_size") or pretrained_cfg["input_size"][-1])
    options.setdefault("name", meta.get("id") or out.name)

    def write_format(tmp: Path) -> dict:
        # torch.export's writer aborts the process on a full disk: make sure of the room first
        ensure_space(tmp, 3 * sum(t.numel() * t.element_size() for t in model.state_dict().values()) + (16 << 20))
        with as_os_errors(out / f"model.{fmt}"):
            return FORMATS[fmt](model, tmp, img, **options)

    cfg = {**pretrained_cfg, "architecture": architecture, "num_classes": model_args.get("num_classes")}
    return save_local_dir(model, out, architecture, model_args, cfg, extra=meta, write_more=write_format, replace=force)
