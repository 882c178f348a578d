"""`export`: any member in a format (a timm local-dir, plus model.pt2 or a checked ONNX file)."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from learngene.api._common import Request, verb
from learngene.core.errors import UserError
from learngene.core.localdir import read_local_dir_config
from learngene.zoo import resolve

if TYPE_CHECKING:
    from learngene.pool.store import Pool


@dataclass(frozen=True)
class ExportResult:
    """The export folder (``os.fspath`` of the result: it stands where a path does) and the
    record its config.json keeps (format, precision, the check against eager, the ONNX file's
    accuracy)."""

    out: Path
    record: dict

    def __fspath__(self) -> str:
        return str(self.out)

    def __truediv__(self, other):
        return self.out / other

    def to_dict(self) -> dict:
        """What ``learngene export --json`` prints."""
        return {"out": str(self.out), **self.record}


@dataclass(frozen=True)
class ExportRequest(Request):
    ref: str
    _: KW_ONLY
    out: str | Path
    fmt: str = "onnx"
    precision: str = "fp32"
    pool: str | Path | Pool = None
    data: str | Path | None = None
    checkpoint: str | Path | None = None
    pretrained: bool = False
    force: bool = False

    def check(self):
        from learngene.core.registries import FORMATS
        from learngene.onnx_cache import check_precisions

        FORMATS.check(self.fmt, "--format")
        check_precisions([self.precision])
        if self.precision != "fp32" and self.fmt != "onnx":
            raise UserError(f"--precision {self.precision} is for --format onnx (int8 is ONNX Runtime's quantisation)")


@verb(ExportRequest)
def export(r: ExportRequest) -> ExportResult:
    """Any member (a pool descendant or child, the ancestor, a grown or merged model, a timm
    name) in a format: a timm local-dir, plus model.pt2 or an ONNX file (each checked against
    the eager model before it is written; an ONNX file's accuracy measured by ONNX Runtime).

    Args:
        ref: the member (``POOL:MEMBER``, a child or descendant id with ``pool``, ``local-dir:DIR``,
            ``embedded``, a timm name with ``pretrained`` / ``checkpoint``).
        out, force: the export folder, replace one learngene wrote.
        fmt: ``timm``, ``pt2`` or ``onnx``; precision: ``fp32``, ``int8``, ``int8-static`` (onnx).
        data: calibration images and the ONNX file's accuracy (default the embedded digits).
    """
    from learngene.core.data import data_for
    from learngene.core.io import check_output
    from learngene.formats import export_model, onnx_options

    check_output(r.out, r.force)
    member = resolve(r.ref, pool=r.pool, checkpoint=r.checkpoint, pretrained=r.pretrained, progress=False)
    options = {}
    if r.fmt == "onnx":
        dm = data_for(r.data, member.data_config, augment=False)
        if dm.num_classes != member.model().num_classes:
            raise UserError(
                f"data {dm.name} has {dm.num_classes} classes but {member.id} has {member.model().num_classes}"
            )
        options = onnx_options(dm, r.precision)
    cfg = {**member.data_config, "architecture": member.architecture}
    meta = {"id": member.id, "kind": member.kind, "accuracy": member.accuracy, "provenance": member.provenance}
    folder = export_model(
        member.model(),
        r.out,
        member.architecture,
        member.model_args,
        cfg,
        meta,
        fmt=r.fmt,
        force=r.force,
        what="output",
        **options,
    )
    return ExportResult(Path(folder), read_local_dir_config(folder).get("learngene", {}).get("export", {}))
