"""`learngene serve --engine ray`: the same zoo, routes and member choice on Ray Serve, for
more replicas than one process holds and for clusters of machines.

A replica (`ZooReplica`, one Ray actor) holds the pool's shared blocks once (or the ONNX
Runtime sessions on shared initializers), answers the v2 routes itself (`V2Routes`, as
LitServe's spec does) and batches the requests it gets with Ray Serve's dynamic batching
(``serve.batch``); Ray Serve's proxy spreads requests over the replicas, replaces a replica that
dies, and scales them when ``autoscaling`` (Ray's own ``autoscaling_config``) is given. Each
replica's member choice sees its own queue: the router sends a request to the less loaded of
two replicas, so a replica's queue is what a request waits behind.

Where Ray runs: a local instance started here (loopback only, no dashboard, no usage report)
and stopped on the way out, or an existing cluster (``address``: "auto" on a node of it, or
"ray://HEAD:10001"); then every node needs learngene installed and the pool at the same path.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import Request
from ray import serve

from learngene.core.errors import UserError
from learngene.serving.routes import V2Routes, ZooSettings, authorize, error

APP = "learngene"


@serve.ingress()
class ZooReplica(V2Routes):
    """One Ray Serve replica: the members on the pool's blocks, behind the v2 routes."""

    def __init__(self, z: ZooSettings):
        from learngene.serving.runner import MemberRunner

        V2Routes.__init__(self, z)
        self.runner = MemberRunner(z.pool_path, z.revision, list(z.frontier), z.threads, z.onnx)
        self.token = z.token
        self.extra = {"replica": os.getpid()}  # which replica answered (a client may log it)
        self._batch.set_max_batch_size(z.max_batch_size)
        self._batch.set_batch_wait_timeout_s(z.batch_timeout_ms / 1000)
        # the model runs in a thread (torch and ONNX Runtime release the GIL): the replica's
        # event loop keeps reading requests and forming the next batch meanwhile
        self._exec = ThreadPoolExecutor(1, thread_name_prefix="learngene-infer")

    def __serve_build_asgi_app__(self):
        from fastapi import Depends, FastAPI, HTTPException

        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        token = self.token

        def bearer(request: Request):
            authorize(request, token)

        for path, fn, methods in self.routes():
            app.add_api_route(path, fn, methods=methods, dependencies=[Depends(bearer)])

        @app.exception_handler(HTTPException)
        async def _v2_errors(request, exc):  # the protocol's {"error": ...} body
            return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

        return app

    def _workers_ready(self) -> bool:
        return True  # a replica answers only once its constructor (the model's load) is done

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)  # set per server in __init__
    async def _batch(self, items: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
        return await asyncio.get_running_loop().run_in_executor(self._exec, self.runner.predict, items)

    async def _run(self, member: str, arr: np.ndarray):
        try:
            return await self._batch((member, arr)), True
        except Exception:  # noqa: BLE001  (the route answers 500 naming the member)
            return None, False


def local_ray(cpus: int) -> None:
    """A Ray instance of this machine only: loopback, no dashboard (the caller turns off the
    usage report)."""
    import ray

    # Ray Serve gives its HTTP proxy 5 s to report ready and kills it after three misses: on a
    # loaded 2-core machine its start takes longer, and the server died with it (measured with a
    # test suite beside it). Read by Ray's controller, which inherits this environment; a
    # value the user set stands.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "60")
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level="warning",
        namespace=APP,
    )


def serve_ray(
    z: ZooSettings,
    *,
    host: str,
    port: int,
    replicas: int,
    autoscaling: dict | None,
    address: str | None,
    on_ready=None,
) -> None:
    """Run the zoo on Ray Serve until SIGINT / SIGTERM (then Ray Serve drains the replicas'
    requests in flight, at most 30 s, and a Ray instance started here stops)."""
    import signal

    import ray

    # the caller's handlers, taken before ray.init puts its own (a SIGTERM handler that exits 15)
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network at run time
    if address is None:
        most = autoscaling.get("max_replicas", replicas) if autoscaling else replicas
        local_ray(max(os.cpu_count() or 1, most * z.threads))  # the replicas the user asked for all start
    else:
        try:
            ray.init(address=address, namespace=APP, log_to_driver=False, logging_level="warning")
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise UserError(f"--ray-address {address}: no Ray cluster answers there ({str(e)[:120]})") from None
    got: dict = {}
    for s, h in previous.items():
        signal.signal(s, h)
    try:
        serve.start(http_options={"host": host, "port": port})
        options = dict(
            name=z.pool_name,
            ray_actor_options={"num_cpus": z.threads},
            max_ongoing_requests=z.max_queue,  # the member choice refuses beyond its queue itself
            graceful_shutdown_timeout_s=30,
            health_check_period_s=2,
        )
        if autoscaling:
            options["autoscaling_config"] = autoscaling
        else:
            options["num_replicas"] = replicas
        app = serve.deployment(ZooReplica).options(**options).bind(z)
        for s in previous:
            signal.signal(s, lambda signum, frame: got.setdefault("signal", signum))
        serve.run(app, name=APP, route_prefix="/", blocking=False)
        if on_ready is not None:
            on_ready()
        while "signal" not in got:
            time.sleep(0.1)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        try:  # the replicas finish their requests in flight first
            serve.shutdown() if address is None else serve.delete(APP)  # a cluster's other apps stay
        finally:
            ray.shutdown()
    h = previous.get(got["signal"])
    if callable(h):
        h(got["signal"], None)
    raise KeyboardInterrupt
