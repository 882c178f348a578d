"""ONNX Runtime sessions over learngene's ONNX files: one per file, or one per member with the
initializers members share (the same bytes) held once, the largest difference from the eager
model, and a file's accuracy measured by ONNX Runtime itself (never copied from another file)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn


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
        # each session has its own intra-op threads, which by default spin for a while after a
        # run: with many members served in turn on a few cores, the pools of the last ones run
        # still spin beside the one that works (measured: the adaptive way at 2 clients fell to
        # 61% SLO attainment when its requests went to two members)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
