"""The Open Inference Protocol (KServe v2) routes (routes.py) as a LitServe spec."""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
from litserve.specs.base import LitSpec
from litserve.utils import LitAPIStatus, ResponseBufferItem

from learngene.serving.routes import V2Routes, ZooSettings, error

__all__ = ["KServeV2", "error"]


class KServeV2(V2Routes, LitSpec):
    """The v2 routes as a LitServe spec: a request goes through LitServe's queue to its
    inference worker (dynamic batching there); ``shared`` (draining, in flight) is shared with
    the main process, which drains on SIGTERM."""

    def __init__(self, z: ZooSettings, *, shared):
        LitSpec.__init__(self)
        V2Routes.__init__(self, z)
        self.api_path = "/v2/infer"  # LitServe's queue key; the routes are V2Routes'
        self.shared = shared

    def __getstate__(self):
        state = super().__getstate__()
        state["shared"] = None  # the worker process needs none of the API server's state
        return state

    def pre_setup(self, lit_api):
        for path, fn, methods in self.routes():
            self.add_endpoint(path, fn, methods)

    def decode_request(self, request, context_kwargs=None):
        return request

    def encode_response(self, output, context_kwargs=None):
        return output

    def _workers_ready(self) -> bool:
        st = self._server.workers_setup_status if self._server else {}
        return bool(st) and all(v == "ready" for v in st.values())

    def _draining(self) -> bool:
        return bool(self.shared[0].value)

    def _in_flight(self, delta: int) -> None:
        with self.shared[1].get_lock():
            self.shared[1].value += delta

    async def _run(self, member: str, arr: np.ndarray):
        uid = uuid.uuid4()
        event = asyncio.Event()
        self.response_buffer[uid] = ResponseBufferItem(event=event)
        self.request_queue.put_nowait((self.response_queue_id, uid, time.monotonic(), (member, arr)))
        await event.wait()
        response, status = self.response_buffer.pop(uid).response
        return response, status == LitAPIStatus.OK
