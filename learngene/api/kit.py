"""`kit`: the folder to copy to a device (ONNX files, kit.json, probe.py)."""

from __future__ import annotations

from pathlib import Path

from learngene.api._common import _open
from learngene.core.errors import UserError
from learngene.zoo import pool_data, pool_zoo


def kit(
    pool="pools/embedded",
    *,
    out,
    precisions=("fp32", "int8"),
    batch_sizes=(1, 8),
    members=None,
    data=None,
    force: bool = False,
    progress=lambda m: None,
) -> Path:
    """A folder to copy to a device: every descendant of the latest revision (``members``: only
    these ids) as ONNX at each precision, kit.json (checksums, the host's accuracy of each file)
    and probe.py, which times them there with onnxruntime and numpy alone.

    Args:
        pool: the pool; out, force: the kit folder, replace one learngene wrote.
        precisions: ``fp32``, ``int8``, ``int8-static`` (a list or comma-separated).
        batch_sizes: what probe.py times; data: the pool's data (calibration, accuracy).
        progress: a callable taking a line per stage.
    """
    from learngene.measure.kit import write_kit

    pool = _open(pool)
    rev = pool.revision("latest")
    if rev is None:
        raise UserError(
            f"pool {pool.path} has no assembled revision yet (its stitches are not stored): "
            "run `learngene assemble` first"
        )
    dm = pool_data(pool, data, 64, augment=False)
    identity = {
        "pool": str(pool.path.resolve()),
        "pool_revision": rev["id"],
        "ancestor_sha256": pool.ancestor["sha256"],
        "revision_files": {e["file"]: e["sha256"] for e in rev["files"]},
    }
    zoo = pool_zoo(pool, dm=dm)
    ids = [m.strip() for m in (members.split(",") if isinstance(members, str) else members or []) if m.strip()]
    chosen = [zoo.get(i) for i in ids] if ids else list(zoo)
    return write_kit(
        chosen,
        dm,
        out,
        identity=identity,
        precisions=precisions,
        batch_sizes=batch_sizes,
        force=force,
        progress=progress,
    )
