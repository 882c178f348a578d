"""Exporting a child: a timm local-dir folder (config.json + model.safetensors) that
``timm.create_model('local-dir:DIR', pretrained=True)`` loads after ``import learngene``
(plain timm for the two auxiliary models), plus ``model.pt2``, a ``torch.export`` program
that runs with torch alone (``torch.export.load(path).module()(x)``), checked against the
eager model before the folder is put in place."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from learngene.core.io import check_output, save_local_dir

EXPORT_TOL = 1e-4  # max |logit difference| accepted between eager and exported


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
        diff = (loaded(x) - model(x)).abs().max().item()
    return diff


def export_child(model: nn.Module, out: Path, architecture: str, model_args: dict, pretrained_cfg: dict,
                 meta: dict, force: bool = False, program: bool = True) -> Path:
    """Write the child folder atomically (built beside the target, renamed into place)."""
    out = check_output(out, force, "child")

    def write_program(tmp: Path) -> dict:
        if not program:
            return {}
        diff = export_program(model, tmp, int(model_args["img_size"]))
        if diff > EXPORT_TOL:
            raise RuntimeError(f"torch.export program differs from the eager model by {diff:.2e}")
        return {"export": {"file": "model.pt2", "format": "torch.export", "max_abs_diff": diff}}

    cfg = {**pretrained_cfg, "architecture": architecture, "num_classes": model_args.get("num_classes")}
    return save_local_dir(model, out, architecture, model_args, cfg, extra=meta, write_more=write_program)
