"""Serving: the whole zoo behind one endpoint (`learngene serve`).

- `policy`: which member answers a request (a latency budget, an accuracy floor, the queue
  ahead of it), and when to refuse (503 + Retry-After) rather than queue without bound;
- `protocol`: the Open Inference Protocol (KServe v2) tensors, JSON and binary;
- `engine`: the LitServe API (one inference worker holding the pool's blocks once, every
  member a path through them, LitServe's dynamic batching) and the v2 endpoints.
"""
