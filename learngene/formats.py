"""The formats a model is written in (a registry), and ONNX files for the runtimes devices use.

Every export folder is a timm local-dir (config.json + model.safetensors: timm loads it after
``import learngene``, plain timm for a plain ViT); a format adds its file:

    timm   the local-dir alone
    pt2    + model.pt2, a torch.export program (dynamic batch) that runs with torch alone
    onnx   + model.onnx (torch.onnx.export(dynamo=True), dynamic batch) or, for an int8
           precision, model.int8.onnx / model.int8-static.onnx, and export.json

Each file is checked against the eager model before the folder is put in place (max |logit
difference| <= 1e-4 for fp32; the program for pt2, ONNX Runtime for onnx); a failed check is a
one-line `CheckFailed` naming the model and the difference, and nothing is written.

Precisions (ONNX Runtime's quantisation): ``int8`` is dynamic (weights int8, activations
quantised per batch at run time: no calibration), ``int8-static`` is static QDQ with per-
channel weights, calibrated on training images (what edge NPUs want). An int8 file is not
held to the fp32 tolerance: its own accuracy is measured, never copied from the fp32 one.

ONNX files are cached under $LEARNGENE_HOME/onnx (`learngene.onnx_cache`), so bench, kit and
target export a member once; `learngene.onnx_sessions` runs them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn as nn

from learngene.core.errors import CheckFailed
from learngene.core.io import as_os_errors, check_output, ensure_space, file_sha256
from learngene.core.localdir import json_safe, save_local_dir
from learngene.core.registries import FORMATS
from learngene.onnx_cache import CALIBRATION_IMAGES, EXPORT_TOL, onnx_file, onnx_name
from learngene.onnx_sessions import max_ort_diff, onnx_accuracy

# --------------------------------------------------------------------------- torch.export


def export_program(model: nn.Module, folder: Path, img_size: int, in_chans: int = 3) -> float:
    """Write folder/model.pt2 (batch size dynamic) and return the max |difference| between
    its logits and the eager model's on a random batch."""
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = torch.randn(2, in_chans, img_size, img_size)
    with torch.no_grad():
        ep = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    path = folder / "model.pt2"
    torch.export.save(ep, str(path))
    loaded = torch.export.load(str(path)).module()
    x = torch.randn(3, in_chans, img_size, img_size)
    with torch.no_grad():
        return (loaded(x) - model(x)).abs().max().item()


# --------------------------------------------------------------------------- ONNX


def calibration_of(dm) -> tuple[torch.Tensor, str]:
    """The training images static int8 calibrates on, and a key naming them (for the cache)."""
    from learngene.core.data import sample_images

    fp = dm.fingerprint()
    return sample_images(dm, CALIBRATION_IMAGES), f"{fp.get('files')}|{fp.get('counts')}|{dm.img_size}"


def onnx_options(dm, precision: str) -> dict:
    """What the onnx format needs of the data: calibration images (int8-static) and the
    evaluation of the written file on the test split."""
    images, key = calibration_of(dm) if precision == "int8-static" else (None, "")
    return {
        "precision": precision,
        "calibration": images,
        "calibration_key": key,
        "evaluate": lambda path: onnx_accuracy(path, dm.eval_loader("test")),
    }


# --------------------------------------------------------------------------- formats


def write_timm(model, folder, img_size, **_) -> dict:
    return {}


def write_pt2(model, folder, img_size, name="model", **_) -> dict:
    diff = export_program(model, folder, img_size)
    if not diff <= EXPORT_TOL:
        raise CheckFailed(f"the torch.export program of {name} differs from the eager model by {diff:.2e}: not written")
    return {"export": {"file": "model.pt2", "format": "torch.export", "max_abs_diff": diff}}


def write_onnx(
    model, folder, img_size, precision="fp32", calibration=None, calibration_key="", name="model", evaluate=None, **_
) -> dict:
    out = folder / onnx_name(precision)
    for attempt in range(2):
        path, rec = onnx_file(model, img_size, precision, calibration, calibration_key, name)
        shutil.copyfile(path, out)
        if file_sha256(out) != rec["sha256"]:
            raise CheckFailed(f"the ONNX file of {name} changed while it was copied from the cache: not written")
        if precision != "fp32":
            break
        # the difference of this very file against the model being exported, not a figure cached
        # with the file: a cache entry swapped for another model's is caught here, dropped and rebuilt
        diff = max_ort_diff(model, out, img_size)
        if diff <= EXPORT_TOL:
            rec["max_abs_diff"] = diff
            break
        if attempt == 0:
            from learngene.core.errors import warn

            warn(f"ONNX cache entry {path.name} does not compute {name} (max |logit diff| {diff:.2e}): rebuilt")
            for f in (path, path.with_suffix(".json")):
                f.unlink(missing_ok=True)
            continue
        raise CheckFailed(
            f"the ONNX file of {name} differs from the eager model by {diff:.2e} (> {EXPORT_TOL:g}) "
            "in ONNX Runtime: not written"
        )
    rec = {"file": onnx_name(precision), "format": "onnx", **rec}
    if evaluate is not None:  # the accuracy of this very file, measured by ONNX Runtime
        rec["accuracy"] = evaluate(folder / onnx_name(precision))
    (folder / "export.json").write_text(json.dumps(json_safe(rec), indent=2))
    return {"export": rec}


# the writers by name: learngene.core.registries.FORMATS, each (model, folder, img_size, **options) ->
# metadata for config.json


def export_model(
    model: nn.Module,
    out: Path,
    architecture: str,
    model_args: dict,
    pretrained_cfg: dict,
    meta: dict,
    *,
    fmt: str = "pt2",
    force: bool = False,
    what: str = "child",
    **options,
) -> Path:
    """Write ``model`` as a timm local-dir plus its format's file, atomically (built beside
    the target, renamed into place)."""
    FORMATS.check(fmt, "--format")
    out = check_output(out, force, what)
    img = int(model_args.get("img_size") or pretrained_cfg["input_size"][-1])
    options.setdefault("name", meta.get("id") or out.name)

    def write_format(tmp: Path) -> dict:
        # torch.export's writer aborts the process on a full disk: make sure of the room first
        ensure_space(tmp, 3 * sum(t.numel() * t.element_size() for t in model.state_dict().values()) + (16 << 20))
        with as_os_errors(out / f"model.{fmt}"):
            return FORMATS[fmt](model, tmp, img, **options)

    cfg = {**pretrained_cfg, "architecture": architecture, "num_classes": model_args.get("num_classes")}
    return save_local_dir(model, out, architecture, model_args, cfg, extra=meta, write_more=write_format, replace=force)
