"""Your own data, end to end, through the CLI: an ImageFolder of real images in the formats
users have, the embedded ancestor fitted to its classes, a pool, the tiny child, the bench.
Writes benchmarks/results/own_data.{md,json}.

    python benchmarks/own_data.py [--per-class 250] [--val-per-class 60]

The images: the animal-mnist package's 28x28 silhouettes (10 classes; installed here with
`pip install --no-deps animal-mnist` if missing: its TensorFlow dependency is not needed),
written as DIR/train/<class>/ and DIR/val/<class>/, each image in one of: grayscale PNG,
RGB JPEG, RGBA PNG (transparent background), palette PNG, 16-bit PNG, CMYK JPEG, at 28 or
56 pixels, in turn. Then, each timed (2 cores, a fresh LEARNGENE_HOME holding only the cached
embedded ancestor):

    learngene ancestor --data DIR                  # the embedded ancestor on these classes, as it is
    learngene ancestor --data DIR --fine-tune      # fitted to them (cached)
    learngene build-pool --data DIR --out POOL     # takes the fitted ancestor by itself
    learngene assemble --pool POOL --data DIR --size tiny
    learngene bench --pool POOL --data DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import RESULTS, cpu_name, ensure_animals

FORMATS = [("L", "png"), ("RGB", "jpg"), ("RGBA", "png"), ("P", "png"), ("I;16", "png"), ("CMYK", "jpg")]


def write_image(arr: np.ndarray, path: Path, mode: str, size: int) -> None:
    from PIL import Image

    im = Image.fromarray(arr, "L").resize((size, size), Image.BILINEAR)
    if mode == "RGBA":  # the silhouette opaque, the rest transparent (what a cut-out icon looks like)
        im = Image.merge("RGBA", (im, im, im, im.point(lambda v: 255 if v > 16 else 0)))
    elif mode == "I;16":
        im = Image.fromarray(np.asarray(im).astype(np.uint16) * 257)  # a 16-bit PNG
    elif mode != "L":
        im = im.convert(mode)
    im.save(path)


def write_folder(root: Path, per_class: int, val_per_class: int) -> dict:
    from learngene.core.sources import ANIMALS, animal_arrays

    x, y = animal_arrays()
    rng = np.random.default_rng(0)
    counts = {}
    k = 0
    for c, name in enumerate(ANIMALS):
        idx = rng.permutation(np.flatnonzero(y == c))[: per_class + val_per_class]
        for split, part in (("train", idx[:per_class]), ("val", idx[per_class:])):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in part:
                mode, ext = FORMATS[k % len(FORMATS)]
                write_image(x[i], d / f"{i}.{ext}", mode, 28 if (k // len(FORMATS)) % 2 == 0 else 56)
                counts[f"{mode} {ext}"] = counts.get(f"{mode} {ext}", 0) + 1
                k += 1
    return counts


def cli(*args, env) -> tuple[float, dict | str]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "learngene.cli", *map(str, args)], capture_output=True, text=True, env=env)
    if r.returncode:
        sys.exit(f"learngene {' '.join(map(str, args))}: {r.stderr[-2000:]}")
    secs = time.perf_counter() - t0
    try:
        return secs, json.loads(r.stdout)
    except json.JSONDecodeError:
        return secs, r.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=250)
    ap.add_argument("--val-per-class", type=int, default=60)
    a = ap.parse_args()
    ensure_animals()
    res = {"machine": f"{cpu_name()}, {os.cpu_count()} cores", "per_class": a.per_class, "val_per_class": a.val_per_class}
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        res["formats"] = write_folder(work / "animals", a.per_class, a.val_per_class)
        home = work / "home"
        cached = Path(os.environ.get("LEARNGENE_HOME", Path.home() / ".cache" / "learngene")) / "ancestors" / "embedded"
        if cached.is_dir():  # the embedded ancestor is not what this measures
            shutil.copytree(cached, home / "ancestors" / "embedded")
        env = {**os.environ, "LEARNGENE_HOME": str(home), "OMP_NUM_THREADS": "2"}
        data, pool = work / "animals", work / "pool"
        s, res["before"] = cli("ancestor", "--data", data, "--json", env=env)
        s, res["fitted"] = cli("ancestor", "--data", data, "--fine-tune", "--json", "-q", env=env)
        res["seconds"] = {"fit the ancestor": s}
        s, _ = cli("build-pool", "--data", data, "--out", pool, "-q", env=env)
        res["seconds"]["build-pool"] = s
        res["pool"] = json.loads((pool / "pool.json").read_text())["auxiliary"]
        s, res["assemble"] = cli("assemble", "--pool", pool, "--data", data, "--size", "tiny", "--json", "-q", env=env)
        res["seconds"]["assemble --size tiny"] = s
        s, rows = cli("bench", "--pool", pool, "--data", data, "--json", "-q", env=env)
        res["seconds"]["bench"] = s
        res["bench"] = [r for r in rows if r["infer_batch_size"] == 1]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "own_data.json").write_text(json.dumps(res, indent=2))
    write_md(res)
    print(f"wrote {RESULTS / 'own_data.md'}")


def write_md(res: dict) -> None:
    f, b = res["fitted"], res["before"]
    child = res["assemble"]["chosen"]
    lines = ["# Your own data, end to end", "",
             f"`python benchmarks/own_data.py` on {res['machine']}: an ImageFolder of animal silhouettes (animal-mnist, "
             f"10 classes, {res['per_class']} train / {res['val_per_class']} val images per class), written as "
             + ", ".join(f"{n} {k}" for k, n in res["formats"].items()) + " (28 or 56 pixels), run through the CLI.", "",
             "| stage | result | wall s |", "|---|---|---|",
             f"| `learngene ancestor --data DIR` | embedded ancestor as it is: top1 {b['data_top1']:.2f}% (it learnt other classes) | - |",
             f"| `learngene ancestor --data DIR --fine-tune` | top1 {f['before_top1'] if 'before_top1' in f else 'n/a'}% -> "
             f"**{f['test_top1']:.2f}%**, kNN probe {f['before_knn_top1']:.2f}% -> {f['knn_top1']:.2f}% ({f['epochs']} epochs) | "
             f"{res['seconds']['fit the ancestor']:.0f} |"]
    for name, meta in res["pool"].items():
        m = meta["metrics"]
        lines.append(f"| `learngene build-pool --data DIR` | {name}: width {meta['model_args']['embed_dim']}, "
                     f"{meta['params'] / 1e6:.2f}M params, test top1 {m['test_top1']:.2f}% | "
                     + (f"{res['seconds']['build-pool']:.0f} |" if name == next(iter(res["pool"])) else "|"))
    lines += [f"| `learngene assemble --size tiny` | {child['id']}: {child['params'] / 1e6:.3f}M params, test top1 "
              f"{child['test_top1']:.2f}% | {res['seconds']['assemble --size tiny']:.0f} |",
              f"| `learngene bench` | {len(res['bench'])} members, top1 {min(r['top1'] for r in res['bench']):.2f}-"
              f"{max(r['top1'] for r in res['bench']):.2f}% | {res['seconds']['bench']:.0f} |", ""]
    (RESULTS / "own_data.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
