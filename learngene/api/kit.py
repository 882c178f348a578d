"""`kit`: the folder to copy to a device (ONNX files, kit.json, probe.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from learngene.api._common import Request, _open, verb
from learngene.core.errors import UserError
from learngene.zoo import member_ids, pick_members, pool_data, pool_zoo

if TYPE_CHECKING:
    from learngene.pool.store import Pool


@dataclass(frozen=True)
class KitRequest(Request):
    pool: str | Path | Pool = "pools/embedded"
    _: KW_ONLY
    out: str | Path
    precisions: str | Sequence = ("fp32", "int8")
    batch_sizes: str | Sequence = (1, 8)
    members: str | Sequence = None
    data: str | Path | None = None
    force: bool = False
    progress: Callable | None = lambda m: None


@verb(KitRequest)
def kit(r: KitRequest) -> Path:
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

    pool = _open(r.pool)
    rev = pool.revision("latest")
    if rev is None:
        raise UserError(
            f"pool {pool.path} has no assembled revision yet (its stitches are not stored): "
            "run `learngene assemble` first"
        )
    dm = pool_data(pool, r.data, 64, augment=False)
    identity = {
        "pool": str(pool.path.resolve()),
        "pool_revision": rev["id"],
        "ancestor_sha256": pool.ancestor["sha256"],
        "revision_files": {e["file"]: e["sha256"] for e in rev["files"]},
    }
    zoo = pool_zoo(pool, dm=dm)
    ids = member_ids(r.members)
    chosen = pick_members(list(zoo), ids, pool.path)
    return write_kit(
        chosen,
        dm,
        r.out,
        identity=identity,
        precisions=r.precisions,
        batch_sizes=r.batch_sizes,
        force=r.force,
        progress=r.progress,
    )
