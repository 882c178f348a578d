"""The device kit: a folder to copy to the device. Every member's ONNX file at every
precision asked for, `kit.json` (members, input size and normalisation, the sha256 of every
file, the pool revision it was made from, the accuracy each member reached on the host, by
ONNX Runtime, on the test split) and `probe.py`, which times them there with onnxruntime and
numpy alone and writes latency.json for `learngene target --latency-file`."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from learngene.core.io import check_output, file_sha256, staged_folder, state_dict_sha256
from learngene.formats import calibration_of
from learngene.measure.probe import KIT_FORMAT
from learngene.onnx_cache import check_precisions, file_accuracy, onnx_file, prefetch_onnx

PROBE = Path(__file__).with_name("probe.py")
HARNESS = Path(__file__).with_name("probe_harness.py")  # probe.py imports it from beside itself


def write_kit(
    members,
    dm,
    out,
    *,
    identity: dict,
    precisions=("fp32", "int8"),
    batch_sizes=(1, 8),
    force: bool = False,
    progress=lambda m: None,
) -> Path:
    """Write the kit for ``members`` (zoo members read by ``dm``) into ``out``; ``identity``
    (pool, pool_revision, revision_files, ancestor_sha256) says what it was made from."""
    from learngene.measure.members import parse_batch_sizes

    precisions = check_precisions(precisions)
    sizes = parse_batch_sizes(batch_sizes)
    out = check_output(out, force, "kit")
    calibration = calibration_of(dm) if "int8-static" in precisions else None
    entries = []
    t0 = time.perf_counter()
    prefetch_onnx([(m.model().cpu(), m.img_size, m.id) for m in members])
    progress(f"kit: {len(members)} members exported to ONNX, {time.perf_counter() - t0:.0f} s")
    # replace=force: a second kit to the same folder without --force is refused, even one that
    # appeared while this one was being written
    with staged_folder(out, replace=force) as stage:
        for m in members:
            m.static()
            weights = state_dict_sha256(m.model().state_dict())
            for prec in precisions:
                images, key = calibration if prec == "int8-static" else (None, "")
                path, rec = onnx_file(m.model().cpu(), m.img_size, prec, images, key, name=m.id)
                name = f"{m.id}.{prec}.onnx"
                shutil.copyfile(path, stage / name)
                acc = file_accuracy(stage / name, dm)  # the host's own figure, cached by the file's sha256
                entries.append(
                    {
                        "id": m.id,
                        "kind": m.kind,
                        "precision": prec,
                        "file": name,
                        "sha256": rec["sha256"],
                        "weights_sha256": weights,
                        "params": m.params,
                        "flops": m.flops,
                        "trained": m.trained,
                        "host_top1": acc["top1"],
                        "host_top5": acc["top5"],
                    }
                )
            progress(f"kit: {m.id} ({', '.join(precisions)}), {time.perf_counter() - t0:.0f} s")
        shutil.copyfile(PROBE, stage / "probe.py")
        shutil.copyfile(HARNESS, stage / "probe_harness.py")
        cfg = dm.data_config
        kit = {
            "format": KIT_FORMAT,
            "version": 1,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **identity,
            "input": {
                "name": "images",
                "shape": list(cfg["input_size"]),
                "dtype": "float32",
                "layout": "NCHW",
                "mean": list(cfg["mean"]),
                "std": list(cfg["std"]),
                "interpolation": cfg.get("interpolation"),
                "crop_pct": cfg.get("crop_pct"),
            },
            "data": dm.name,
            "batch_sizes": sizes,
            "precisions": precisions,
            "members": entries,
            "probe_sha256": file_sha256(stage / "probe.py"),
            "harness_sha256": file_sha256(stage / "probe_harness.py"),
            "onnx_opset": rec["opset"],
            "onnxruntime_host": rec["onnxruntime"],
        }
        (stage / "kit.json").write_text(json.dumps(kit, indent=2))
    return out
