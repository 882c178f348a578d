"""What runs the members, in whichever engine serves them (LitServe's worker, a Ray Serve
replica): the pool's blocks held once and every member a path through them (torch), or a
session per member on initializers with the same bytes held once (ONNX Runtime)."""

from __future__ import annotations

import numpy as np


class MemberRunner:
    """The pool's members in one process, each batch of requests split by member."""

    def __init__(self, pool: str, revision: str | None, members: list[str], threads: int, onnx: dict | None = None):
        import torch

        torch.set_num_threads(threads)
        self.torch, self.onnx = torch, onnx
        if onnx is not None:
            from learngene.onnx_sessions import shared_ort_sessions

            self.sessions, _ = shared_ort_sessions(onnx, threads)
            return
        from learngene.pool.store import Pool

        p = Pool.open(pool)
        pm, has = p.model(revision)
        if not has:  # never assembled: the stitches at their least-squares init, as bench measured them
            from learngene.stitch.init import init_stitches
            from learngene.zoo import pool_data

            init_stitches(pm, "lstsq", pool_data(p, None, augment=False))
        self.pm = pm.eval()
        self.specs = {s.id: s for s in pm.specs if s.id in members}

    def predict(self, items: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
        """Logits for each (member, images [N, C, H, W] float32) item, in their order; the items
        of one member run as one batch."""
        out: list = [None] * len(items)
        groups: dict[str, list[int]] = {}
        for i, (member, _) in enumerate(items):
            groups.setdefault(member, []).append(i)
        with self.torch.inference_mode():
            for member, idx in groups.items():
                xs = np.concatenate([items[i][1] for i in idx]) if len(idx) > 1 else items[idx[0]][1]
                if self.onnx is not None:
                    logits = self.sessions[member].run(None, {"images": xs})[0]
                else:
                    logits = self.pm(self.torch.from_numpy(xs), self.specs[member]).float().numpy()
                start = 0
                for i in idx:
                    n = items[i][1].shape[0]
                    out[i] = logits[start : start + n]
                    start += n
        return out
