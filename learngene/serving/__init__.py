"""Serving: the whole zoo behind one endpoint (`learngene serve`).

- `policy`: which member answers a request (a latency budget, an accuracy floor, the queue
  ahead of it), and when to refuse (503 + Retry-After) rather than queue without bound;
- `protocol`: the Open Inference Protocol (KServe v2) tensors, JSON and binary;
- `routes`: the v2 endpoints (and Triton's extensions) over the zoo, engine-free;
- `runner`: what runs the members in a process (the pool's blocks once, or ONNX Runtime
  sessions on shared initializers); `frontier`: what the choice knows of each member;
- `engine` + `kserve`: LitServe (one API server, one inference worker, its dynamic batching);
- `ray_engine`: Ray Serve (replicas, each a runner behind the same routes; autoscaling).
"""
