"""`learngene serve`: a pool's members behind one Open Inference Protocol (KServe v2) endpoint."""

from __future__ import annotations

import argparse
import sys

from learngene.cli.common import add_data_arg, call

HELP = "serve every member of a pool behind one KServe v2 endpoint, picked per request by a latency budget"


def add_arguments(sp) -> None:
    sp.add_argument("pool", nargs="?", default="pools/embedded", help="the pool (default: pools/embedded)")
    sp.add_argument("--pool", dest="pool_flag", metavar="DIR", help=argparse.SUPPRESS)
    sp.add_argument("--members", default=None, help="member ids served, comma separated (default: every descendant)")
    sp.add_argument(
        "--runtime",
        default="auto",
        choices=["auto", "torch", "onnxruntime"],
        help="what runs the members: onnxruntime (a session per member on shared initializers, the faster "
        "at one image a request) or torch (paths through the pool's blocks); default auto: onnxruntime when "
        "installed, else torch",
    )
    sp.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sp.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sp.add_argument(
        "--slo-ms", type=float, default=None, help="latency budget of a request to the pool that names none"
    )
    sp.add_argument("--token-file", metavar="FILE", help="require 'Authorization: Bearer <the file's token>'")
    sp.add_argument(
        "--engine",
        default="litserve",
        choices=["litserve", "ray"],
        help="litserve (one inference worker on this machine) or ray (Ray Serve replicas, here or on a cluster)",
    )
    sp.add_argument("--replicas", type=int, default=1, help="--engine ray: replicas, each holding the blocks once")
    sp.add_argument(
        "--autoscaling",
        metavar="JSON",
        default=None,
        help='--engine ray: Ray Serve\'s autoscaling_config, e.g. \'{"min_replicas": 1, "max_replicas": 4}\'',
    )
    sp.add_argument(
        "--ray-address",
        metavar="ADDR",
        default=None,
        help="--engine ray: an existing Ray cluster ('auto', ray://HEAD:10001); default: a local instance",
    )
    sp.add_argument(
        "--threads",
        type=int,
        default=None,
        help="inference intra-op threads (default: the cores; per Ray replica: the cores shared among the replicas)",
    )
    sp.add_argument("--max-batch-size", type=int, default=16, help="dynamic batching: most requests per batch")
    sp.add_argument("--batch-timeout-ms", type=float, default=2.0, help="dynamic batching: wait for a batch (ms)")
    sp.add_argument("--max-queue", type=int, default=64, help="requests in flight before new ones get 503")
    sp.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body (MiB)")
    sp.add_argument("--revision", default="latest", help="pool revision served (default latest)")
    add_data_arg(sp, "the pool's data, for a frontier measured now (default: what it was built on)", workers=False)


def run(ns) -> int:
    from learngene.api import serve

    def ready():
        where = f"http://{ns.host}:{ns.port}/v2"
        print(
            f"learngene: starting {ns.pool_flag or ns.pool} on {where} (ready: {where}/health/ready)",
            file=sys.stderr,
            flush=True,
        )

    call(serve, ns, ns.pool_flag or ns.pool, on_ready=ready)
    return 0
