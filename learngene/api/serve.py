"""`serve`: a pool's members behind one Open Inference Protocol endpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from learngene.api._common import _open
from learngene.api.assemble import descendants
from learngene.api.bench import _frontier
from learngene.core.errors import UserError
from learngene.zoo import pool_data, pool_zoo


def serve(
    pool="pools/embedded",
    *,
    members=None,
    runtime: str = "torch",
    host: str = "127.0.0.1",
    port: int = 8000,
    slo_ms: float | None = None,
    token_file=None,
    threads: int | None = None,
    max_batch_size: int = 16,
    batch_timeout_ms: float = 2.0,
    max_queue: int = 64,
    max_body_mb: float = 16.0,
    revision: str | None = "latest",
    data=None,
    log_level: str = "warning",
    on_ready=None,
) -> None:
    """Serve a pool's members behind one Open Inference Protocol (KServe v2) endpoint until
    SIGINT / SIGTERM (which drain the requests in flight first).

    Args:
        pool: the pool (a folder or a `Pool`).
        members: the member ids served (default: every descendant); each is a v2 model, and the
            pool's name is a virtual model that picks one per request from its ``parameters``
            ``max_latency_ms`` / ``min_top1`` (see `learngene.serving.policy`).
        runtime: ``torch`` (the members as paths through the pool's blocks, held once) or
            ``onnxruntime`` (a session per member, initializers with the same bytes held once).
        host, port: where to listen (127.0.0.1 unless told otherwise).
        slo_ms: the latency budget of a virtual-model request that names none: under load a
            smaller member answers, beyond what the smallest holds the answer is 503 + Retry-After.
        token_file: a file holding a bearer token every request but the health probes must carry.
        threads: the inference worker's intra-op threads (default: the cores).
        max_batch_size, batch_timeout_ms: LitServe's dynamic batching.
        max_queue: requests in flight before new ones get 503; max_body_mb: the largest body.
        revision, data: the pool revision served; the data its frontier is measured on when this
            host has no bench report of that revision yet (one is made then).
    """
    from learngene.core import limits

    try:
        from learngene.serving.engine import frontier_from_rows
        from learngene.serving.engine import serve as run
    except ImportError as e:
        need = f"learngene serve needs LitServe ({e.name} is missing)"
        raise UserError(f"{need}: pip install 'learngene[serve]'") from None

    if runtime not in ("torch", "onnxruntime"):
        raise UserError(f"--runtime {runtime!r}: serve runs the members in torch or onnxruntime")
    port = limits.int_in(port, "--port", 1, 65535)
    threads = limits.threads(threads) or limits.cores()
    max_batch_size = limits.int_in(max_batch_size, "--max-batch-size", 1, 256)
    max_queue = limits.int_in(max_queue, "--max-queue", 1, 10_000)
    batch_timeout_ms = limits.float_in(batch_timeout_ms, "--batch-timeout-ms", 0.0, 1000.0)
    max_body = int(limits.float_in(max_body_mb, "--max-body-mb", 0.001, 1024.0) * 2**20)
    if slo_ms is not None:
        slo_ms = limits.float_in(slo_ms, "--slo-ms", 0.0, 600_000.0, low_open=True)
    token = None
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise UserError(f"--token-file {token_file}: {e.strerror}") from None
        if not token or len(token) > 4096 or any(c.isspace() for c in token):
            raise UserError(f"--token-file {token_file}: expected one token (no spaces, at most 4096 characters)")
    pool = _open(pool)
    rev = pool.head(revision).id
    ids = [s["id"] for s in descendants(pool, revision)]
    wanted = ids if not members else [m.strip() for m in (members.split(",") if isinstance(members, str) else members)]
    unknown = [m for m in wanted if m not in ids]
    if unknown:
        raise UserError(f"--members: {unknown[0]!r} is not a descendant of {pool.path} (e.g. {', '.join(ids[:3])})")
    torch.set_num_threads(threads)
    # batch 1 for each member's latency, batch 32 (bench's default second size, when the report
    # has it) for what each further image of a request adds
    # in the runtime that will serve them
    _, rows, measured = _frontier(pool, rev, runtime, "fp32", (1, 32), "cpu", data=data, threads=threads)
    front = frontier_from_rows(rows, wanted)
    if len(front) < len(wanted) and not measured:  # a report that lacks a member: measure now
        _, rows, _ = _frontier(pool, rev, runtime, "fp32", (1, 32), "cpu", data=data, threads=threads, remeasure=True)
        front = frontier_from_rows(rows, wanted)
    onnx = None
    if runtime == "onnxruntime":  # the very files bench timed (cached by graph and weights)
        from learngene.onnx_cache import member_onnx_files
        from learngene.onnx_sessions import shared_ort_sessions
        from learngene.serving.engine import time_sessions

        zoo = pool_zoo(pool, rev, dm=pool_data(pool, data, 64, augment=False))
        onnx = member_onnx_files([zoo.get(m) for m in front])

        sessions, _ = shared_ort_sessions(onnx, threads)  # the worker's sessions, timed as it will run them
        time_sessions(sessions, tuple(pool.data_config["input_size"]), front)
        del sessions
    cfg = pool.data_config
    run(
        str(pool.path),
        pool.path.name,
        rev,
        front,
        tuple(cfg["input_size"]),
        pool.num_classes,
        host=host,
        port=port,
        slo_ms=slo_ms,
        token=token,
        threads=threads,
        max_batch_size=max_batch_size,
        batch_timeout_ms=batch_timeout_ms,
        max_queue=max_queue,
        max_body=max_body,
        onnx=onnx,
        log_level=log_level,
        on_ready=on_ready,
    )
