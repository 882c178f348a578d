"""The Open Inference Protocol (KServe v2) tensors that `learngene serve` speaks: an infer
request as JSON (``data`` flat, row-major) or with the binary tensor extension (a JSON header
of ``Inference-Header-Content-Length`` bytes, then the raw tensors), and the response in the
form the request asked for. Every refusal is a `BadRequest` naming the field (400)."""

from __future__ import annotations

import json

import numpy as np

DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64}
MAX_BATCH = 256  # images in one request


class BadRequest(ValueError):
    pass


def _field(obj, key, kind, where):
    if not isinstance(obj, dict) or key not in obj:
        raise BadRequest(f"{where}: missing '{key}'")
    v = obj[key]
    if not isinstance(v, kind):
        raise BadRequest(f"{where}.{key}: expected {kind.__name__ if isinstance(kind, type) else 'a value'}")
    return v


def parse_infer(body: bytes, header_length: str | None, input_shape: tuple[int, int, int]):
    """(images float32 [N, C, H, W], request dict) from an infer request's body."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise BadRequest("Inference-Header-Content-Length: not an integer") from None
        if not 0 < n <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length: {n} is outside the body ({len(body)} bytes)")
        head, rest = body[:n], body[n:]
    else:
        head, rest = body, b""
    try:
        req = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"body: not JSON ({e.__class__.__name__})") from None
    if not isinstance(req, dict):
        raise BadRequest("body: expected a JSON object")
    inputs = _field(req, "inputs", list, "request")
    if len(inputs) != 1:
        raise BadRequest(f"inputs: expected one input tensor, got {len(inputs)}")
    t = inputs[0]
    shape = _field(t, "shape", list, "inputs[0]")
    dtype = _field(t, "datatype", str, "inputs[0]")
    if dtype not in DTYPES:
        raise BadRequest(f"inputs[0].datatype: {dtype!r} is not one of {', '.join(DTYPES)}")
    if len(shape) != 4 or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise BadRequest(f"inputs[0].shape: expected [N, {', '.join(map(str, input_shape))}], got {shape}")
    if tuple(shape[1:]) != tuple(input_shape):
        raise BadRequest(f"inputs[0].shape: expected [N, {', '.join(map(str, input_shape))}], got {shape}")
    if not 1 <= shape[0] <= MAX_BATCH:
        raise BadRequest(f"inputs[0].shape: batch {shape[0]} is outside 1..{MAX_BATCH}")
    count = int(np.prod(shape))
    params = t.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("inputs[0].parameters: expected an object")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        item = np.dtype(DTYPES[dtype]).itemsize
        if not isinstance(size, int) or size != count * item or size != len(rest):
            raise BadRequest(f"inputs[0].parameters.binary_data_size: {size} does not hold {shape} of {dtype}")
        arr = np.frombuffer(rest, dtype=DTYPES[dtype]).reshape(shape)
    else:
        data = _field(t, "data", list, "inputs[0]")
        try:
            arr = np.asarray(data, dtype=DTYPES[dtype])
        except (TypeError, ValueError):
            raise BadRequest("inputs[0].data: not numbers") from None
        if arr.size != count:
            raise BadRequest(f"inputs[0].data: {arr.size} values do not fill shape {shape}")
        arr = arr.reshape(shape)
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise BadRequest("inputs[0].data: not finite (NaN or inf)")
    rp = req.get("parameters") or {}
    if not isinstance(rp, dict):
        raise BadRequest("parameters: expected an object")
    for key in ("max_latency_ms", "min_top1"):
        v = rp.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math_finite(v) or v <= 0):
            raise BadRequest(f"parameters.{key}: expected a positive number, got {v!r}")
    outs = req.get("outputs")
    if outs is not None and (
        not isinstance(outs, list) or any(not isinstance(o, dict) or o.get("name") != "logits" for o in outs)
    ):
        raise BadRequest("outputs: this model has one output, 'logits'")
    return np.ascontiguousarray(arr), req


def math_finite(v) -> bool:
    return v == v and v not in (float("inf"), float("-inf"))


def wants_binary(req: dict) -> bool:
    if (req.get("parameters") or {}).get("binary_data_output"):
        return True
    return any((o.get("parameters") or {}).get("binary_data") for o in req.get("outputs") or [])


def infer_response(model: str, logits: np.ndarray, req: dict, extra: dict) -> tuple[bytes, dict]:
    """(body, headers) of an infer response: JSON, or a JSON header + raw logits."""
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    out = {"name": "logits", "datatype": "FP32", "shape": list(logits.shape)}
    resp = {"model_name": model, "model_version": "1", "outputs": [out], "parameters": extra}
    if "id" in req:
        resp["id"] = req["id"]
    if wants_binary(req):
        raw = logits.tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
        head = json.dumps(resp).encode()
        return head + raw, {
            "Inference-Header-Content-Length": str(len(head)),
            "Content-Type": "application/octet-stream",
        }
    out["data"] = logits.ravel().tolist()
    return json.dumps(resp).encode(), {"Content-Type": "application/json"}
