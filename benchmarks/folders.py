"""ImageFolders of real images, laid out as users have them, from images that registry
packages bundle (nothing is downloaded): the own-data benchmark's inputs.

    python benchmarks/folders.py OUT [--kinds animals,photos,digits]

Each kind is written as ``OUT/KIND/train/<class>/`` and ``OUT/KIND/val/<class>/`` (no test/:
learngene carves one out of val/), every image in one of several modes and sizes in turn
(grayscale / RGB / RGBA / palette / 16-bit PNG, RGB / CMYK JPEG):

- ``animals`` (shapes): the animal-mnist package's 28x28 silhouettes, 10 classes, 400 train
  and 100 val per class (the issue's 4,000 / 1,000 layout).
- ``photos`` (natural images): crops of ten scikit-image sample photographs (astronaut,
  camera, cat, coffee, coins, moon, rocket, brick, grass, gravel), 10 classes: a class is the
  photograph a 48x48 crop comes from, resized to 32 px; train crops from the top three
  quarters of each photograph, val crops from the bottom quarter (no crop overlaps the other
  split), 300 train and 80 val per class.
- ``digits``: scikit-learn's 1,797 handwritten digits (8x8), upscaled to 32 px, a fixed
  stratified 80/20 split into train/ and val/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

FORMATS = [
    ("L", "png"),
    ("RGB", "jpg"),
    ("RGBA", "png"),
    ("P", "png"),
    ("I;16", "png"),
    ("CMYK", "jpg"),
    ("RGB", "png"),
]
KINDS = ("animals", "photos", "digits")


def ensure(package: str, spec: str, no_deps: bool = False) -> None:
    import importlib.util
    import subprocess

    if importlib.util.find_spec(package) is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", *(["--no-deps"] if no_deps else []), spec], check=True
        )


def write_image(img, path: Path, mode: str) -> None:
    """A PIL image (L or RGB) saved in ``mode`` (the ways users' files differ)."""
    from PIL import Image

    if mode == "RGBA":  # the subject opaque, a dark background transparent (a cut-out icon)
        gray = img.convert("L")
        img = img.convert("RGB")
        img = Image.merge("RGBA", (*img.split(), gray.point(lambda v: 255 if v > 16 else 0)))
    elif mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257)
    elif mode == "P":
        img = img.convert("RGB").convert("P", palette=Image.ADAPTIVE)
    else:
        img = img.convert(mode)
    img.save(path)


def write_split(root: Path, split: str, items, classes, counter: list) -> int:
    n = 0
    for label, img in items:
        d = root / split / classes[label]
        d.mkdir(parents=True, exist_ok=True)
        mode, ext = FORMATS[counter[0] % len(FORMATS)]
        write_image(img, d / f"{counter[0]:05d}.{ext}", mode)
        counter[0] += 1
        n += 1
    return n


def animals(root: Path, per_class: int = 400, val_per_class: int = 100) -> dict:
    from PIL import Image

    ensure("animal_mnist", "animal-mnist==0.4", no_deps=True)
    from learngene.core.sources import ANIMALS, animal_arrays

    x, y = animal_arrays()
    rng = np.random.default_rng(0)
    train, val = [], []
    for c in range(len(ANIMALS)):
        idx = rng.permutation(np.flatnonzero(y == c))[: per_class + val_per_class]
        for k, i in enumerate(idx):
            size = 28 if k % 2 == 0 else 56  # two sizes, as files from two sources would be
            img = Image.fromarray(x[i], "L").resize((size, size), Image.BILINEAR)
            (train if k < per_class else val).append((c, img))
    counter = [0]
    return {
        "classes": len(ANIMALS),
        "train": write_split(root, "train", train, ANIMALS, counter),
        "val": write_split(root, "val", val, ANIMALS, counter),
    }


PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "moon", "rocket", "brick", "grass", "gravel")


def photos(root: Path, per_class: int = 300, val_per_class: int = 80, crop: int = 48, size: int = 32) -> dict:
    from PIL import Image

    ensure("skimage", "scikit-image")
    from skimage import data as skdata

    rng = np.random.default_rng(0)
    train, val = [], []
    for c, name in enumerate(PHOTOS):
        arr = getattr(skdata, name)()
        img = Image.fromarray(arr)
        w, h = img.size
        cut = int(h * 0.75)  # train crops above this line, val crops below it: no crop is in both splits
        for n, (top, bottom), out in ((per_class, (0, cut - crop), train), (val_per_class, (cut, h - crop), val)):
            for _ in range(n):
                x0, y0 = int(rng.integers(0, w - crop + 1)), int(rng.integers(top, bottom + 1))
                out.append((c, img.crop((x0, y0, x0 + crop, y0 + crop)).resize((size, size), Image.BILINEAR)))
    counter = [0]
    return {
        "classes": len(PHOTOS),
        "train": write_split(root, "train", train, PHOTOS, counter),
        "val": write_split(root, "val", val, PHOTOS, counter),
    }


def digits(root: Path, size: int = 32) -> dict:
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    idx = np.arange(len(d.target))
    tr, va = train_test_split(idx, test_size=0.2, stratify=d.target, random_state=0)
    classes = [str(i) for i in range(10)]

    def img(i):
        a = (d.images[i] / 16.0 * 255).astype(np.uint8)
        return Image.fromarray(a, "L").resize((size, size), Image.BILINEAR)

    counter = [0]
    return {
        "classes": 10,
        "train": write_split(root, "train", [(int(d.target[i]), img(i)) for i in sorted(tr)], classes, counter),
        "val": write_split(root, "val", [(int(d.target[i]), img(i)) for i in sorted(va)], classes, counter),
    }


WRITERS = {"animals": animals, "photos": photos, "digits": digits}


def write(out: Path, kinds=KINDS) -> dict:
    """Write the folders of ``kinds`` under ``out``; {kind: counts}."""
    return {k: WRITERS[k](Path(out) / k) for k in kinds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--kinds", default=",".join(KINDS))
    a = ap.parse_args()
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in WRITERS]
    if bad:
        sys.exit(f"unknown kind {bad[0]!r} (choose from {', '.join(WRITERS)})")
    if a.out.exists() and any(a.out.iterdir()):
        sys.exit(f"{a.out} exists and is not empty")
    for k, n in write(a.out, kinds).items():
        print(f"{a.out / k}: {n['classes']} classes, {n['train']} train / {n['val']} val images")


if __name__ == "__main__":
    main()
