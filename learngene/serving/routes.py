"""The Open Inference Protocol (KServe v2) routes, whichever engine serves them: health, server
and model metadata, Triton's repository index, config and statistics, per-model inference
routes and the pool's virtual model that picks a member per request, metrics; errors in the v2
body that v2 clients (tritonclient) read. No engine is imported here (LitServe's spec is in
kserve.py, Ray Serve's replica in ray_engine.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from fastapi import Request, Response
from fastapi.responses import JSONResponse

from learngene.serving.policy import NoMember, Overloaded, Scheduler
from learngene.serving.protocol import BadRequest, infer_response, parse_infer

BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    # the v2 protocol's error body, which v2 clients (tritonclient) read
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def authorize(request: Request, token: str | None) -> None:
    """The bearer token, when one is set (health probes go without): 401 otherwise. Both
    engines call it (LitServe's `authorize` hook, a FastAPI dependency on a Ray replica)."""
    if token is None or request.url.path.startswith("/v2/health"):
        return
    import hmac

    from fastapi import HTTPException

    got = request.headers.get("authorization", "")
    if not (got.startswith("Bearer ") and hmac.compare_digest(got[7:].strip(), token)):
        raise HTTPException(status_code=401, detail="a bearer token is required (Authorization: Bearer ...)")


@dataclass(frozen=True)
class ZooSettings:
    """What every engine serves and how: the pool (its folder, name, revision), the members'
    frontier (latency, accuracy per member) and input, and the server's limits. One object from
    the API to the engine, its routes and its workers or replicas (it pickles: Ray ships it)."""

    pool_path: str
    pool_name: str
    revision: str | None
    frontier: dict
    input_shape: tuple
    num_classes: int
    slo_ms: float | None
    token: str | None
    threads: int
    max_batch_size: int
    batch_timeout_ms: float
    max_queue: int
    max_body: int
    onnx: dict | None = None  # member -> ONNX file: ONNX Runtime runs the members instead of torch

    @property
    def runtime(self) -> str:
        return "torch" if self.onnx is None else "onnxruntime"


class V2Routes:
    """The Open Inference Protocol's routes over the zoo, the member choice and /metrics, in
    whichever engine serves them: an engine gives `_run` (the member's logits for the images),
    `_workers_ready` and `_draining` (LitServe's spec below; a Ray Serve replica in ray_engine)."""

    def __init__(self, z: ZooSettings):
        self.max_batch_size = z.max_batch_size
        self.platform = {"torch": "pytorch_learngene", "onnxruntime": "onnxruntime_learngene"}[z.runtime]
        self.pool_name, self.frontier = z.pool_name, z.frontier
        self.input_shape, self.num_classes, self.max_body = tuple(z.input_shape), z.num_classes, z.max_body
        frontier = z.frontier
        self.scheduler = Scheduler(
            {m: f["latency_ms"] for m, f in frontier.items()},
            {m: f["top1"] for m, f in frontier.items()},
            per_image_ms={m: f["per_image_ms"] for m, f in frontier.items() if "per_image_ms" in f},
            slo_ms=z.slo_ms,
            max_queue=z.max_queue,
        )
        self.served: dict[tuple[str, str, int], int] = {}
        self.hist = {m: [0] * (len(BUCKETS_MS) + 1) for m in frontier}
        self.sums = {m: [0.0, 0] for m in frontier}
        self.extra: dict = {}  # what every answer's parameters add (a Ray replica: its pid)

    def routes(self) -> list[tuple]:
        """(path, handler, methods) of every route, in the order they must be matched."""
        return [
            ("/v2", self.server_meta, ["GET"]),
            ("/v2/health/live", self.live, ["GET"]),
            ("/v2/health/ready", self.ready, ["GET"]),
            ("/v2/models", self.models, ["GET"]),
            # Triton's extensions its clients call (tritonclient: get_model_repository_index,
            # get_model_config, get_inference_statistics); before /v2/models/{name}
            ("/v2/repository/index", self.repository_index, ["POST"]),
            ("/v2/models/stats", self.stats, ["GET"]),
            ("/v2/models/{name}", self.model_meta, ["GET"]),
            ("/v2/models/{name}/ready", self.model_ready, ["GET"]),
            ("/v2/models/{name}/config", self.model_config, ["GET"]),
            ("/v2/models/{name}/stats", self.stats, ["GET"]),
            ("/v2/models/{name}/versions/{version}", self.model_meta, ["GET"]),
            ("/v2/models/{name}/versions/{version}/config", self.model_config, ["GET"]),
            ("/v2/models/{name}/infer", self.infer, ["POST"]),
            ("/v2/models/{name}/versions/{version}/infer", self.infer, ["POST"]),
            ("/metrics", self.metrics, ["GET"]),
        ]

    # what an engine gives
    def _workers_ready(self) -> bool:
        raise NotImplementedError

    def _draining(self) -> bool:
        return False

    def _in_flight(self, delta: int) -> None:
        """Requests handed to the model: +1 / -1 (the engine's drain waits for 0)."""

    async def _run(self, member: str, arr: np.ndarray) -> tuple[np.ndarray | None, bool]:
        """(logits, True), or (None, False) where the inference failed."""
        raise NotImplementedError

    # ------------------------------------------------------------------ metadata and health

    async def server_meta(self):
        from learngene.core import __version__

        extensions = ["binary_tensor_data", "model_repository", "model_configuration", "statistics"]
        return {"name": "learngene", "version": __version__, "extensions": extensions}

    async def live(self):
        return Response(status_code=200)

    async def ready(self):
        ok = self._workers_ready() and not self._draining()
        return Response(status_code=200 if ok else 503)

    def _names(self) -> list[str]:
        return [self.pool_name, *self.frontier]

    def _unknown(self, name: str, version: str) -> str | None:
        """Why a (model, version) of a route is not served (every model has one version, 1;
        "" is a client's unversioned form), or None."""
        if name not in self._names():
            return f"unknown model {name!r} (serving {', '.join(self._names()[:4])}, ...)"
        if version not in ("", "1"):
            return f"model {name!r} has no version {version!r} (only 1)"
        return None

    async def models(self):
        return {"models": [{"name": n, "versions": ["1"], "state": "READY"} for n in self._names()]}

    async def repository_index(self):
        """Triton's model repository index: every model served, all loaded (no repository to
        load from: the pool's members are the models)."""
        return [{"name": n, "version": "1", "state": "READY", "reason": ""} for n in self._names()]

    async def model_config(self, name: str, version: str = "1"):
        """A Triton model configuration for each member and the virtual model: its tensors,
        batching (LitServe's dynamic batching), and, for the virtual model, what it chooses among."""
        if why := self._unknown(name, version):
            return error(404, why)
        cfg = {
            "name": name,
            "platform": self.platform,
            "backend": "learngene",
            "max_batch_size": self.max_batch_size,
            "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": list(self.input_shape)}],
            "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": [self.num_classes]}],
            "dynamic_batching": {},
            "version_policy": {"latest": {"num_versions": 1}},
        }
        if name == self.pool_name:
            cfg["parameters"] = {"members": {"string_value": ",".join(self.frontier)}}
        return cfg

    async def stats(self, name: str | None = None):
        """Triton's inference statistics, from what this server counted: successes and
        failures per model, and the time the successes took."""
        if name is not None and name not in self._names():
            return error(404, f"unknown model {name!r}")
        out = []
        for n in [name] if name else self._names():
            ok = sum(c for (m, _, code), c in self.served.items() if m == n and code == 200)
            bad = sum(c for (m, _, code), c in self.served.items() if m == n and code != 200)
            ns = int(self.sums[n][0] * 1e9) if n in self.sums else 0
            out.append(
                {
                    "name": n,
                    "version": "1",
                    "inference_count": ok,
                    "execution_count": ok,
                    "inference_stats": {"success": {"count": ok, "ns": ns}, "fail": {"count": bad, "ns": 0}},
                }
            )
        return {"model_stats": out}

    async def model_meta(self, name: str, version: str = "1"):
        if why := self._unknown(name, version):
            return error(404, why)
        meta = {
            "name": name,
            "versions": ["1"],
            "platform": self.platform,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, *self.input_shape]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, self.num_classes]}],
        }
        if name == self.pool_name:
            meta["parameters"] = {
                "members": self.frontier,
                "request_parameters": ["max_latency_ms", "min_top1"],
                "slo_ms": self.scheduler.slo_ms,
            }
        else:
            meta["parameters"] = self.frontier[name]
        return meta

    async def model_ready(self, name: str):
        if name not in self._names():
            return error(404, f"unknown model {name!r}")
        return Response(status_code=200 if self._workers_ready() else 503)

    # ------------------------------------------------------------------ inference

    async def infer(self, name: str, request: Request, version: str = "1"):
        t0 = time.perf_counter()
        if self._draining():
            return self._count(name, None, error(503, "shutting down", {"Retry-After": "5"}))
        if why := self._unknown(name, version):
            return self._count(name, None, error(400, f"{why}: a member id or the pool's name {self.pool_name!r}"))
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return self._count(name, None, error(413, f"request body over {self.max_body} bytes"))
        body = await request.body()
        if len(body) > self.max_body:
            return self._count(name, None, error(413, f"request body over {self.max_body} bytes"))
        try:
            arr, req = parse_infer(body, request.headers.get("inference-header-content-length"), self.input_shape)
        except BadRequest as e:
            return self._count(name, None, error(400, str(e)))
        params = req.get("parameters") or {}
        try:
            ticket, choice = self.scheduler.choose(
                None if name == self.pool_name else name,
                params.get("max_latency_ms"),
                params.get("min_top1"),
                n=int(arr.shape[0]),
            )
        except NoMember as e:
            return self._count(name, None, error(400, str(e)))
        except Overloaded as e:
            return self._count(name, None, error(503, str(e), {"Retry-After": str(e.retry_after)}))
        self._in_flight(1)
        try:
            response, ok = await self._run(choice.member, arr)
        finally:
            self._in_flight(-1)
        ms = (time.perf_counter() - t0) * 1000
        if not ok:
            self.scheduler.done(ticket, None)
            return self._count(name, choice.member, error(500, f"inference failed on {choice.member}"))
        self.scheduler.done(ticket, ms)
        extra = {
            "member": choice.member,
            "member_top1": self.frontier[choice.member]["top1"],
            "predicted_ms": round(choice.predicted_ms, 3),
            **self.extra,
        }
        data, headers = infer_response(name, response, req, extra)
        self._observe(choice.member, ms)
        return self._count(name, choice.member, Response(content=data, headers=headers, status_code=200))

    # ------------------------------------------------------------------ metrics

    def _count(self, model: str, member: str | None, resp: Response) -> Response:
        key = (model if model in self._names() else "unknown", member or "", resp.status_code)
        self.served[key] = self.served.get(key, 0) + 1
        return resp

    def _observe(self, member: str, ms: float) -> None:
        h = self.hist[member]
        for i, b in enumerate(BUCKETS_MS):
            if ms <= b:
                h[i] += 1
                break
        else:
            h[-1] += 1
        self.sums[member][0] += ms / 1000
        self.sums[member][1] += 1

    async def metrics(self):
        """Prometheus' text format: requests by model, member and code; latency per member."""
        lines = ["# TYPE learngene_requests_total counter"]
        for (model, member, code), n in sorted(self.served.items()):
            lines.append(f'learngene_requests_total{{model="{model}",member="{member}",code="{code}"}} {n}')
        lines += ["# TYPE learngene_request_duration_seconds histogram"]
        for member, h in self.hist.items():
            if not self.sums[member][1]:
                continue
            acc = 0
            for b, c in zip(BUCKETS_MS, h):
                acc += c
                lines.append(f'learngene_request_duration_seconds_bucket{{member="{member}",le="{b / 1000:g}"}} {acc}')
            lines.append(
                f'learngene_request_duration_seconds_bucket{{member="{member}",le="+Inf"}} {self.sums[member][1]}'
            )
            lines.append(f'learngene_request_duration_seconds_sum{{member="{member}"}} {self.sums[member][0]:.6f}')
            lines.append(f'learngene_request_duration_seconds_count{{member="{member}"}} {self.sums[member][1]}')
        lines += [
            "# TYPE learngene_in_flight gauge",
            f"learngene_in_flight {len(self.scheduler.in_flight)}",
            "# TYPE learngene_overhead_ms gauge",
            f"learngene_overhead_ms {self.scheduler.overhead_ms:.4f}",
            "# TYPE learngene_per_request_ahead_ms gauge",
            f"learngene_per_request_ahead_ms {self.scheduler.per_ahead_ms:.4f}",
        ]
        return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
