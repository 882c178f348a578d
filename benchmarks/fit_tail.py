"""The end of a fit: which of its last epochs to keep. One real `learngene ancestor --fine-tune`
(`fit_ancestor`, the default recipe unless overridden) on a folder of benchmarks/folders.py,
every epoch's weights from epoch START on kept in memory; then the validation and test top1 of
each of those epochs and of the average of the weights from each of them to the last (SWA, a
tail average). It asks what the state a fit hands back should be: the peak on validation, the
latest within one standard error of it (what the recipe keeps), or an average of the tail.

    python benchmarks/fit_tail.py KIND START [TAG] [step_budget=8000] [one_se=0] [noflip=1] [clean=0.8]

``clean=F``: training augmentation off after F of the cap (the last epochs on the images as
they are evaluated); ``noflip=1``: no flips whatever the folder; other ``key=value`` override
`FIT_RECIPE`. Threads: $THREADS (default 2; two runs side by side: ``taskset -c N`` and
THREADS=1). One JSON line per run appended to benchmarks/results/fit_tail.jsonl; the folders
and LEARNGENE_HOME under $WORK (default /tmp/fit_tail).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import folders
import lightning as L
import torch
from common import RESULTS, cpu_name

from learngene.core import evaluation, training
from learngene.core.data import data_for
from learngene.models import fitted

OUT = RESULTS / "fit_tail.jsonl"


def _json_or(v: str):
    try:
        return json.loads(v)
    except ValueError:
        return v


def main() -> None:
    kind, start = sys.argv[1], int(sys.argv[2])
    tag = sys.argv[3] if len(sys.argv) > 3 and "=" not in sys.argv[3] else kind
    work = Path(os.environ.get("WORK", "/tmp/fit_tail"))
    os.environ["LEARNGENE_HOME"] = str(work / f"home-{tag}")
    threads = int(os.environ.get("THREADS", "2"))
    torch.set_num_threads(threads)
    clean, overrides = 0.0, {}
    for kv in (a for a in sys.argv[3:] if "=" in a):
        k, v = kv.split("=", 1)
        if k == "clean":
            clean = float(v)
        elif k == "noflip":
            from learngene.core.folders import ImageFolderSource

            ImageFolderSource.flip_invariant = lambda self, cfg: False
        else:
            old = fitted.FIT_RECIPE[k]
            # numbers as numbers; the rest as JSON where it parses (starts=[[1.0,3.5e-4]])
            fitted.FIT_RECIPE[k] = type(old)(float(v)) if isinstance(old, (int, float)) else _json_or(v)
        overrides[k] = v
    if not (work / "folders" / kind).is_dir():
        folders.write(work / "folders", [kind])
    path = work / "folders" / kind
    states = []

    class Keep(L.Callback):
        def on_validation_end(self, trainer, pl_module):
            if trainer.sanity_checking or trainer.current_epoch + 1 < start:
                return
            sd = {k: t.detach().clone() for k, t in pl_module.model.state_dict().items()}
            states.append((trainer.current_epoch + 1, float(trainer.callback_metrics["val/top1"]), sd))

    class Clean(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch + 1 > clean * trainer.max_epochs:
                trainer.datamodule.dataset("train").train = False  # TensorImages: no shift, no flip

    make = training.make_trainer

    def with_keep(args, *a, **kw):  # the real run only, not the probes of the starts
        if args.label == "ancestor (fitting)":
            kw["callbacks"] = [*kw.get("callbacks", []), Keep(), *([Clean()] if clean else [])]
        return make(args, *a, **kw)

    training.make_trainer = with_keep
    from learngene.models.embedded import embedded_ancestor

    t0 = time.time()
    targs = training.TrainerArgs(progress=False, threads=threads)
    anc = fitted.fit_ancestor(embedded_ancestor(), str(path), refit=True, trainer_args=targs)
    secs = time.time() - t0
    m = anc.metrics
    print(json.dumps({k: m[k] for k in ("test_top1", "val_top1", "pixels_knn_top1", "train_seconds")}), flush=True)
    ev = data_for(str(path), anc.data_config, augment=False)
    model = anc.model

    def score(sd):
        model.load_state_dict(sd)
        model.eval()
        return tuple(
            round(evaluation.evaluate(model, dl)["top1"], 2) for dl in (ev.val_dataloader(), ev.test_dataloader())
        )

    per, avgs = [], {}
    for ep, v, sd in states:
        va, te = score(sd)
        per.append((ep, round(v, 4), va, te))
        print(f"epoch {ep}: val {va} test {te}", flush=True)
    for i in range(len(states)):
        tail = states[i:]
        avg = {n: (sum(s[2][n].float() for s in tail) / len(tail)).to(t.dtype) for n, t in tail[-1][2].items()}
        avgs[tail[0][0]] = score(avg)
        print(f"average of epochs {tail[0][0]}-{tail[-1][0]}: val {avgs[tail[0][0]][0]} test {avgs[tail[0][0]][1]}")
    row = {
        "tag": tag,
        "kind": kind,
        "overrides": overrides,
        "recipe": fitted.FIT_RECIPE,
        "threads": threads,
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "metrics": {k: m[k] for k in ("test_top1", "val_top1", "pixels_knn_top1", "keep", "train_seconds")},
        "training": m["training"],
        "per_epoch": per,  # (epoch, val top1 logged in training, val top1, test top1)
        "avg_from": avgs,  # first epoch of the average: (val, test)
        "secs": round(secs, 1),
    }
    with OUT.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
