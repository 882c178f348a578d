"""`serve`: a pool's members behind one Open Inference Protocol endpoint."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from learngene.api._common import Request, _open, verb
from learngene.api.assemble import descendants
from learngene.api.bench import _frontier
from learngene.core.errors import UserError
from learngene.zoo import member_ids, pick_members, pool_data, pool_zoo

if TYPE_CHECKING:
    from learngene.pool.store import Pool


@dataclass(frozen=True)
class ServeRequest(Request):
    pool: str | Path | Pool = "pools/embedded"
    _: KW_ONLY
    members: str | Sequence = None
    runtime: str = "auto"
    engine: str = "litserve"
    replicas: int = 1
    autoscaling: str | dict | None = None
    ray_address: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    slo_ms: float | None = None
    token_file: str | Path | None = None
    threads: int | None = None
    max_batch_size: int = 16
    batch_timeout_ms: float = 2.0
    max_queue: int = 64
    max_body_mb: float = 16.0
    revision: str | None = "latest"
    data: str | Path | None = None
    log_level: str = "warning"
    on_ready: Callable | None = None
    token: str | None = field(default=None, init=False, repr=False)  # read from token_file

    def check(self):
        from learngene.core import limits

        if self.runtime == "auto":  # the faster where it is installed (benchmarks/serve.py)
            import importlib.util

            self._set("runtime", "onnxruntime" if importlib.util.find_spec("onnxruntime") else "torch")
        if self.runtime not in ("torch", "onnxruntime"):
            raise UserError(f"--runtime {self.runtime!r}: serve runs the members in torch or onnxruntime")
        self._set("port", limits.int_in(self.port, "--port", 1, 65535))
        if self.engine not in ("litserve", "ray"):
            raise UserError(f"--engine {self.engine!r}: serve runs on litserve (one process) or ray (replicas)")
        self._set("replicas", limits.int_in(self.replicas, "--replicas", 1, 1024))
        if self.engine == "litserve" and (self.replicas != 1 or self.autoscaling or self.ray_address):
            raise UserError("--replicas / --autoscaling / --ray-address: only with --engine ray")
        if self.autoscaling is not None:
            self._set("autoscaling", _autoscaling(self.autoscaling))
        # a replica's intra-op threads: the cores shared among the replicas started here
        share = limits.cores() if self.engine == "litserve" else max(1, limits.cores() // self.replicas)
        self._set("threads", limits.threads(self.threads) or share)
        self._set("max_batch_size", limits.int_in(self.max_batch_size, "--max-batch-size", 1, 256))
        self._set("max_queue", limits.int_in(self.max_queue, "--max-queue", 1, 10_000))
        self._set("batch_timeout_ms", limits.float_in(self.batch_timeout_ms, "--batch-timeout-ms", 0.0, 1000.0))
        self._set("max_body_mb", limits.float_in(self.max_body_mb, "--max-body-mb", 0.001, 1024.0))
        if self.slo_ms is not None:
            self._set("slo_ms", limits.float_in(self.slo_ms, "--slo-ms", 0.0, 600_000.0, low_open=True))
        if self.token_file is not None:
            try:
                token = Path(self.token_file).read_text().strip()
            except OSError as e:
                raise UserError(f"--token-file {self.token_file}: {e.strerror}") from None
            if not token or len(token) > 4096 or any(c.isspace() for c in token):
                raise UserError(
                    f"--token-file {self.token_file}: expected one token (no spaces, at most 4096 characters)"
                )
            self._set("token", token)


def _autoscaling(value) -> dict:
    """Ray Serve's own ``autoscaling_config`` (a JSON object or a dict), checked by Ray's model."""
    import json

    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise UserError(f"--autoscaling: not JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(value, dict) or not value:
        raise UserError('--autoscaling: expected a JSON object of Ray\'s autoscaling_config, e.g. {"max_replicas": 4}')
    try:
        from ray.serve.config import AutoscalingConfig
    except ImportError:
        raise UserError("--engine ray needs Ray Serve: pip install 'learngene[ray]'") from None
    known = set(getattr(AutoscalingConfig, "model_fields", None) or AutoscalingConfig.__fields__)
    if unknown := sorted(set(value) - known):  # Ray's model would ignore a misspelt setting
        raise UserError(f"--autoscaling: {unknown[0]!r} is not a setting of Ray's autoscaling_config")
    try:
        AutoscalingConfig(**value)
    except Exception as e:  # noqa: BLE001  (pydantic's ValidationError, a TypeError for a stray key)
        first = str(e).strip().splitlines()
        raise UserError(f"--autoscaling: {' '.join(first[:3])[:200]}") from None
    return value


@verb(ServeRequest)
def serve(r: ServeRequest) -> None:
    """Serve a pool's members behind one Open Inference Protocol (KServe v2) endpoint until
    SIGINT / SIGTERM (which drain the requests in flight first).

    Args:
        pool: the pool (a folder or a `Pool`).
        members: the member ids served (default: every descendant); each is a v2 model, and the
            pool's name is a virtual model that picks one per request from its ``parameters``
            ``max_latency_ms`` / ``min_top1`` (see `learngene.serving.policy`).
        runtime: ``onnxruntime`` (a session per member, initializers with the same bytes held
            once) or ``torch`` (the members as paths through the pool's blocks, held once);
            ``auto`` (default): onnxruntime when it is installed, else torch.
        host, port: where to listen (127.0.0.1 unless told otherwise).
        slo_ms: the latency budget of a virtual-model request that names none: under load a
            smaller member answers, beyond what the smallest holds the answer is 503 + Retry-After.
        token_file: a file holding a bearer token every request but the health probes must carry.
        threads: the inference worker's intra-op threads (default: the cores).
        max_batch_size, batch_timeout_ms: dynamic batching (LitServe's, or each Ray replica's).
        engine: ``litserve`` (default: one API server and one inference worker on this machine)
            or ``ray`` (Ray Serve: ``replicas`` replicas, each holding the pool's blocks once).
        replicas: Ray Serve replicas (``engine="ray"``); ``threads`` is then each replica's
            (default: the cores shared among them).
        autoscaling: Ray Serve's own ``autoscaling_config`` (a dict or a JSON object, e.g.
            ``{"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2}``), passed through.
        ray_address: an existing Ray cluster ("auto", "ray://HEAD:10001"; every node needs
            learngene and the pool at the same path); default: a local instance of this
            machine, started and stopped here.
        max_queue: requests in flight before new ones get 503; max_body_mb: the largest body.
        revision, data: the pool revision served; the data its frontier is measured on when this
            host has no bench report of that revision yet (one is made then).
    """
    try:
        if r.engine == "ray":
            from learngene.serving.ray_engine import serve_ray as run
        else:
            from learngene.serving.engine import serve as run
    except ImportError as e:
        engine, extra = ("Ray Serve", "ray") if r.engine == "ray" else ("LitServe", "serve")
        need = f"learngene serve --engine {r.engine} needs {engine} ({e.name} is missing)"
        raise UserError(f"{need}: pip install 'learngene[{extra}]'") from None
    from learngene.serving.frontier import frontier_from_rows, time_sessions
    from learngene.serving.routes import ZooSettings

    threads = r.threads
    pool = _open(r.pool)
    rev = pool.head(r.revision).id
    ids = [s["id"] for s in descendants(pool, r.revision)]
    wanted = pick_members(ids, member_ids(r.members), pool.path)
    torch.set_num_threads(threads)
    # batch 1 for each member's latency, batch 32 (bench's default second size, when the report
    # has it) for what each further image of a request adds
    # in the runtime that will serve them
    _, rows, measured = _frontier(pool, rev, r.runtime, "fp32", (1, 32), "cpu", data=r.data, threads=threads)
    front = frontier_from_rows(rows, wanted)
    if len(front) < len(wanted) and not measured:  # a report that lacks a member: measure now
        _, rows, _ = _frontier(
            pool, rev, r.runtime, "fp32", (1, 32), "cpu", data=r.data, threads=threads, remeasure=True
        )
        front = frontier_from_rows(rows, wanted)
    onnx = None
    if r.runtime == "onnxruntime":  # the very files bench timed (cached by graph and weights)
        from learngene.onnx_cache import member_onnx_files
        from learngene.onnx_sessions import shared_ort_sessions

        zoo = pool_zoo(pool, rev, dm=pool_data(pool, r.data, 64, augment=False))
        onnx = member_onnx_files([zoo.get(m) for m in front])

        sessions, _ = shared_ort_sessions(onnx, threads)  # the worker's sessions, timed as it will run them
        time_sessions(sessions, tuple(pool.data_config["input_size"]), front)
        del sessions
    per_engine = (
        dict(replicas=r.replicas, autoscaling=r.autoscaling, address=r.ray_address)
        if r.engine == "ray"
        else dict(log_level=r.log_level)
    )
    cfg = pool.data_config
    settings = ZooSettings(
        str(pool.path), pool.path.name, rev, front, tuple(cfg["input_size"]), pool.num_classes, slo_ms=r.slo_ms,
        token=r.token, threads=threads, max_batch_size=r.max_batch_size, batch_timeout_ms=r.batch_timeout_ms,
        max_queue=r.max_queue, max_body=int(r.max_body_mb * 2**20), onnx=onnx,
    )  # fmt: skip
    run(settings, host=r.host, port=r.port, on_ready=r.on_ready, **per_engine)
