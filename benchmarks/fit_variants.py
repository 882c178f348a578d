"""Variants of the fit (`learngene ancestor --fine-tune`), each a fixed number of steps in a
plain PyTorch loop over the fit's own data module and augmentation, to ask what would make the
fitted ancestor win where it loses (benchmarks/results/own_data.md): the start (the embedded
digits ancestor's weights or timm's fresh init), batch size, learning rate, label smoothing,
augmentation (no flips, none at all), an EMA of the weights, patch dropout. Warm-up 10% then cosine, AdamW.
Per run: validation top1 per epoch, then test and (clean) training top1 at the end; one JSON
line appended to benchmarks/results/fit_variants.jsonl. Folders: benchmarks/folders.py.

    python benchmarks/folders.py /tmp/od --kinds animals,photos
    python benchmarks/fit_variants.py NAME FOLDER {digits|random|mix:LAMBDA} LR LABEL_SMOOTHING WD BATCH STEPS \
        [noflip=1] [noshift=1] [ema=0.998] [patchdrop=0.25] [pool=avg]

Threads: $THREADS (default 2). Several runs side by side: one core each (taskset -c N, THREADS=1).
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

import lightning as L
import timm
import torch

from learngene.core.data import data_for
from learngene.core.evaluation import evaluate
from learngene.core.training import lr_groups, warmup_cosine
from learngene.models.embedded import EMBEDDED_ARCH, EMBEDDED_MODEL_ARGS, embedded_ancestor
from learngene.models.fitted import start_model

OUT = Path(__file__).parent / "results" / "fit_variants.jsonl"


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    name, folder, init = sys.argv[1], sys.argv[2], sys.argv[3]
    lr, ls, wd = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
    bs, steps = int(sys.argv[7]), int(sys.argv[8])
    extra = dict(a.split("=") for a in sys.argv[9:])
    if extra.get("noshift"):
        from learngene.core import sources

        orig = sources.TensorImages.__init__

        def no_shift(self, *a, **k):
            orig(self, *a, **k)
            self.shift = 0

        sources.TensorImages.__init__ = no_shift
    if extra.get("noflip"):
        from learngene.core.folders import ImageFolderSource

        ImageFolderSource.flip_invariant = lambda self, cfg: False
    base = embedded_ancestor()
    dm = data_for(folder, base.data_config, batch_size=bs, seed=0)
    ev = data_for(folder, base.data_config, augment=False)
    L.seed_everything(0, verbose=False)
    if init == "digits":
        m = copy.deepcopy(base.model)
    elif init.startswith("mix:"):  # the fit's own shrunk start: lam * ancestor + (1 - lam) * fresh
        m = start_model(base, base.model.num_classes, float(init[4:]))
    else:
        m = timm.create_model(EMBEDDED_ARCH, pretrained=False, **EMBEDDED_MODEL_ARGS)
    m.reset_classifier(dm.num_classes, global_pool=extra.get("pool", "token"))  # pool=avg: mean of patch tokens
    if "patchdrop" in extra:  # PatchDropout (Liu et al. 2022): training steps drop a share of the patch tokens
        from timm.layers import PatchDropout

        m.patch_drop = PatchDropout(float(extra["patchdrop"]), num_prefix_tokens=m.num_prefix_tokens)
    opt = torch.optim.AdamW(lr_groups(m, wd, lambda n: lr), lr=lr, weight_decay=wd)
    sched = warmup_cosine(opt, steps, 0.1)  # the fit's own schedule
    dm.setup("fit")
    ema = None
    if "ema" in extra:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(m, multi_avg_fn=get_ema_multi_avg_fn(float(extra["ema"])))
    step, t0, ep, log = 0, time.perf_counter(), 0, []
    while step < steps:
        m.train()
        for x, y in dm.train_dataloader():
            loss = torch.nn.functional.cross_entropy(m(x), y, label_smoothing=ls)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if ema is not None:
                ema.update_parameters(m)
            if step >= steps:
                break
        ep += 1
        v = evaluate(m.eval(), ev.val_dataloader())["top1"]
        ve = evaluate(ema.module.eval(), ev.val_dataloader())["top1"] if ema is not None else None
        log.append((ep, step, round(v, 2), round(time.perf_counter() - t0), ve))
        print(name, ep, step, f"loss {loss.item():.3f}", f"val {v:.2f}", f"{time.perf_counter() - t0:.0f}s", flush=True)
    te = evaluate(m.eval(), ev.test_dataloader())["top1"]
    if ema is not None:
        extra["ema_test"] = evaluate(ema.module.eval(), ev.test_dataloader())["top1"]
        extra["ema_val"] = evaluate(ema.module.eval(), ev.val_dataloader())["top1"]
    tr = evaluate(m.eval(), ev.eval_loader("train"))["top1"]
    res = dict(
        name=name,
        folder=folder,
        init=init,
        lr=lr,
        ls=ls,
        wd=wd,
        bs=bs,
        steps=steps,
        extra=extra,
        test=round(te, 2),
        train=round(tr, 2),
        best_val=max(entry[2] for entry in log),
        secs=round(time.perf_counter() - t0),
        log=log,
    )
    print(json.dumps(res), flush=True)
    with OUT.open("a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
