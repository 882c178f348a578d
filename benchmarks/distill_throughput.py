"""Distillation throughput: Lightning (the way build-pool trains) against a bare PyTorch loop
over the same DistillModule, data, optimiser, schedule and gradient clipping.

Each repeat runs the two back to back for the same number of steps; the first steps of each
run are warm-up and not timed. Reports the median images/s and the ratio per auxiliary model.

    python benchmarks/distill_throughput.py [--steps 60] [--repeats 3] [--device cpu]
    python benchmarks/distill_throughput.py --deit-base --device cuda   # DeiT-Base d6 shapes, random data
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from learngene.pool.build import resolve_recipe_path  # noqa: E402
from learngene.pool.distill import DistillModule, make_student  # noqa: E402
from learngene.pool.recipe import load_recipe  # noqa: E402

RESULTS = Path(__file__).parent / "results"


class StepTimer:
    """Lightning callback: wall time of the steps after warm-up."""

    def __init__(self, warmup: int):
        import lightning as L

        timer = self

        class _CB(L.Callback):
            def on_train_batch_start(self, trainer, *a):
                if trainer.global_step == warmup:
                    _sync()
                    timer.t0 = time.perf_counter()

            def on_train_end(self, trainer, *a):
                _sync()
                timer.t1 = time.perf_counter()

        self.callback = _CB()


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def loader_for(args, ancestor, batch):
    from torch.utils.data import DataLoader

    from learngene.core.data import LearngeneDataModule

    if args.deit_base:
        # Eight random 224x224 batches made once on the device: this measures the training
        # loop, not image decoding or host-to-device copies (both loops get the same list).
        g = torch.Generator().manual_seed(0)
        return Batches(
            [
                (
                    torch.randn(batch, 3, 224, 224, generator=g).to(args.device),
                    torch.randint(0, 1000, (batch,), generator=g).to(args.device),
                )
                for _ in range(8)
            ]
        )
    dm = LearngeneDataModule(None, data_config=ancestor.data_config, batch_size=batch)
    dm.setup()
    return DataLoader(dm.dataset("train"), batch_size=batch, shuffle=True, drop_last=True)


class Batches:
    """A fixed list of batches as one iterable (Lightning reads a plain list as several loaders)."""

    def __init__(self, batches):
        self.batches = batches
        self.batch_size = len(batches[0][1])

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def _batch(loader) -> int:
    return loader.batch_size


def cycle(loader, steps):
    while True:
        yield from loader


def run_lightning(module, loader, steps, warmup, device, precision):
    import lightning as L

    from learngene.core.training import quiet_lightning

    quiet_lightning()
    t = StepTimer(warmup)
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        gradient_clip_val=1.0,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[t.callback],
        precision=precision,
    )
    trainer.fit(module, train_dataloaders=loader)
    return (steps - warmup) * _batch(loader) / (t.t1 - t.t0)


def run_bare(module, loader, steps, warmup, device, precision):
    from learngene.core.training import param_groups, warmup_cosine

    module = module.to(device).train()
    groups = param_groups([module.student, module.W, module.V], module.optim.weight_decay)
    opt = torch.optim.AdamW(groups, lr=module.optim.lr)
    sched = warmup_cosine(opt, steps, module.optim.warmup_fraction)
    dtype = torch.bfloat16 if precision == "bf16-mixed" else None
    it = cycle(loader, steps)
    for step in range(steps):
        if step == warmup:
            _sync()
            t0 = time.perf_counter()
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            loss = module.losses(x, y)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        sched.step()
    _sync()
    return (steps - warmup) * _batch(loader) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--deit-base", action="store_true", help="the deit-base-d6 recipe on a random-init DeiT-Base")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--precision", default=None, help="e.g. bf16-mixed on GPUs")
    args = ap.parse_args()
    import timm

    from learngene.models.loading import LoadedModel
    from learngene.models.refs import load_model

    if args.deit_base:
        torch.manual_seed(0)
        m = timm.create_model("deit_base_patch16_224").eval()
        ancestor = LoadedModel(model=m, name="deit_base_patch16_224", source="random-init", data_config={})
        recipe = load_recipe(resolve_recipe_path("deit-base-d6"))
    else:
        ancestor = load_model("embedded", progress=False)
        recipe = load_recipe(resolve_recipe_path("embedded"))
    batch = args.batch or recipe.distill.batch_size
    loader = loader_for(args, ancestor, batch)
    ancestor.model.to(args.device)
    rows = []
    for spec in recipe.auxiliary:
        res = {"lightning": [], "bare": []}
        for r in range(args.repeats):
            order = ("lightning", "bare") if r % 2 == 0 else ("bare", "lightning")
            for kind in order:
                student = make_student(spec, ancestor.model, seed=r).to(args.device)
                module = DistillModule(student, ancestor.model, spec, recipe.distill).to(args.device)
                fn = run_lightning if kind == "lightning" else run_bare
                res[kind].append(fn(module, loader, args.steps, args.warmup, args.device, args.precision))
        lt, bt = statistics.median(res["lightning"]), statistics.median(res["bare"])
        rows.append(
            {
                "aux": spec.name,
                "width": spec.embed_dim,
                "batch": batch,
                "lightning_img_s": round(lt, 1),
                "bare_img_s": round(bt, 1),
                "ratio": round(lt / bt, 3),
            }
        )
        print(rows[-1], flush=True)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    scale = (
        "deit-base-d6 (random-init DeiT-Base, random 224x224 data)"
        if args.deit_base
        else "embedded pool recipe (digits)"
    )
    lines = [
        f"### {scale} on {device_name}, precision {args.precision or 'fp32'}",
        "",
        f"{args.repeats} repeats x {args.steps} steps ({args.warmup} warm-up), median images/s; torch "
        f"{torch.__version__}.",
        "",
        "| aux | width | batch | Lightning img/s | bare loop img/s | ratio |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['aux']} | {r['width']} | {r['batch']} | {r['lightning_img_s']} | {r['bare_img_s']} | {r['ratio']} |"
        for r in rows
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    tag = ("deit-base-" if args.deit_base else "embedded-") + args.device
    (RESULTS / f"distill_throughput-{tag}.md").write_text(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], f"distill_throughput-{tag}.md").write_text(text)


if __name__ == "__main__":
    main()
