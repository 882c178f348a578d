"""`learngene serve` on LitServe: the whole zoo behind one Open Inference Protocol endpoint.

Why LitServe: it is the Lightning team's serving engine (this project trains with Lightning),
it runs the model in its own worker process with dynamic batching (``max_batch_size``,
``batch_timeout``), and a `LitSpec` adds the endpoints of a protocol, which is how the
KServe v2 routes are added here. Where replicas or machines are needed, `ray_engine` serves
the same routes and members on Ray Serve (``--engine ray``).

Processes: the main one (waits, and drains on SIGTERM), one uvicorn API server (forked: the
v2 routes, the member choice, the metrics) and one inference worker (spawned: it holds the
pool's blocks once, as a `PoolModel`, and runs every member as a path through them; a batch
that mixes members is split by member). Resident memory is the pool's, not the sum of the
members'. With ``--runtime onnxruntime`` the worker holds a session per member instead, every
initializer with the same bytes held once and given to each session that has it
(`learngene.onnx_sessions.shared_ort_sessions`): the same sharing, in the runtime a device runs.
"""

from __future__ import annotations

import functools
import os
import time

import litserve as ls
from fastapi import Request

from learngene.core.errors import UserError
from learngene.core.processes import die_with_parent
from learngene.serving.kserve import KServeV2, error
from learngene.serving.routes import ZooSettings, authorize


class ZooAPI(ls.LitAPI):
    """The inference worker: the pool's members on shared blocks."""

    def __init__(self, z: ZooSettings, **kw):
        super().__init__(**kw)
        self.z = z

    def setup(self, device):
        from learngene.serving.runner import MemberRunner

        die_with_parent(os.getppid())  # a server killed by SIGKILL leaves no worker behind
        z = self.z
        self.runner = MemberRunner(z.pool_path, z.revision, list(z.frontier), z.threads, z.onnx)

    def decode_request(self, request, **kw):
        return request  # (member, images): the runner takes them as they are

    def batch(self, inputs):
        return list(inputs)  # members may differ: the runner groups them

    def predict(self, x, **kw):
        out = self.runner.predict(x if isinstance(x, list) else [x])
        return out if isinstance(x, list) else out[0]

    def unbatch(self, output):
        return output

    def encode_response(self, output, **kw):
        return output

    def authorize(self, request: Request):
        authorize(request, self.z.token)


def serve(z: ZooSettings, *, host: str, port: int, log_level: str = "warning", on_ready=None) -> None:
    """Run the server until SIGINT / SIGTERM (the caller's handlers raise; this drains first)."""
    import multiprocessing as mp
    import signal

    shared = (mp.Value("i", 0), mp.Value("i", 0))  # draining, requests in flight
    spec = KServeV2(z, shared=shared)
    api = ZooAPI(z, max_batch_size=z.max_batch_size, batch_timeout=z.batch_timeout_ms / 1000, spec=spec)
    server = ls.LitServer(
        api,
        accelerator="cpu",
        devices=1,
        workers_per_device=1,
        timeout=60,
        max_payload_size=z.max_body,
        disable_openapi_url=True,
        # ZeroMQ between the API server and the worker instead of multiprocessing queues
        # (LitServe's lower-latency hand-off; on 2 cores it measured level with the queues:
        # the hand-off is not where a request's time goes there)
        fast_queue=True,
    )
    from fastapi import HTTPException

    @server.app.exception_handler(HTTPException)
    async def _v2_errors(request, exc):  # the protocol's {"error": ...} body for auth and size refusals
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    # LitServer.run blocks in a call that a signal does not interrupt when the kernel hands the
    # signal to another thread, so it runs in a thread of its own and this (main) thread
    # watches for SIGINT / SIGTERM: then new requests get 503, those in flight finish (at most
    # 30 s), and only then does LitServe stop its API server and worker.
    got: dict = {}
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda signum, frame: got.setdefault("signal", signum))
    # the API server and LitServe's manager are forked from here: they too die with this process
    os.register_at_fork(after_in_child=functools.partial(die_with_parent, os.getpid()))

    def run():
        try:
            server.run(
                host=host,
                port=port,
                num_api_servers=1,
                log_level=log_level,
                generate_client_file=False,
                api_server_worker_type="process",
            )
        except BaseException as e:  # noqa: BLE001  (handed to the main thread)
            got["error"] = e

    import threading

    if on_ready is not None:
        on_ready()
    t = threading.Thread(target=run, name="litserve", daemon=True)
    try:
        t.start()
        while t.is_alive() and "signal" not in got:
            t.join(0.1)
        if "signal" in got:
            import logging

            # LitServe's worker monitor reads the manager that the shutdown below closes: that
            # one traceback is the shutdown itself, not an error
            logging.getLogger("litserve.server").addFilter(lambda r: "Monitoring worker crashed" not in r.getMessage())
            shared[0].value = 1
            deadline = time.monotonic() + 30
            while shared[1].value > 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            if server._shutdown_event is not None:
                server._shutdown_event.set()
            t.join(60)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for child in mp.active_children():  # whatever LitServe left running
            child.terminate()
    if "signal" in got:
        h = previous.get(got["signal"])
        if callable(h):
            h(got["signal"], None)
        raise KeyboardInterrupt
    e = got.get("error")
    if isinstance(e, OSError) and e.errno == 98:
        raise UserError(f"--port {port}: address {host}:{port} is already in use") from None
    if isinstance(e, SystemExit):
        raise UserError(f"the server on {host}:{port} could not start (is the port in use?)") from None
    if e is not None:
        raise e
