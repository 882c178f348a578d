"""Image folders as users have them: scanning (class folders, symlinks, empty classes),
reading (every image mode becomes RGB the same way in training and evaluation), bad files
(skipped with a count, or refused up front with ``strict``), and timm's transforms.

Rules, in the order a folder meets them:

- ``ROOT/<class>/**/<image>``; hidden folders and files are ignored; symlinks are followed,
  but a folder already visited (a ``-> .`` link, a loop) is not entered twice.
- A class folder without images is refused, naming it (a class nothing can be learnt of);
  so are fewer than 2 classes and a val/ folder whose classes differ from train/'s.
- Reading: EXIF orientation applied; 16-bit and 32-bit integer images scaled to 8 bits
  (``convert('RGB')`` would clip them to white); float images taken as 0..1 when their
  maximum is <= 1, else 0..255; transparency (RGBA, LA, palette with a transparent colour)
  composited on white; CMYK, grayscale, palette and 1-bit images converted to RGB.
- Unreadable files (empty, truncated, not an image): by default the scan checks every
  header and skips the files that fail, with one warning line giving the count and the
  first; a file that fails only when decoded (a truncated JPEG passes the header check) is
  replaced in its batch by the next readable image of the split, with a warning naming it,
  so a bad file never kills a run hours in. ``strict`` decodes every image up front instead
  and refuses the first bad one, naming it.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

from torch.utils.data import Dataset

from learngene.core.errors import UserError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")

# DeiT's training augmentation (timm's RandAugment, magnitude 9 +- 0.5, increasing severity).
DEIT_RAND_AUGMENT = "rand-m9-mstd0.5-inc1"


def warn(message: str) -> None:
    print(f"learngene: warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- scanning


def _walk_once(top: Path):
    """os.walk following symlinks, never entering a real folder twice (a link to '.' or to
    a parent would otherwise repeat files, or loop until the OS refuses)."""
    seen = set()
    for dirpath, dirnames, files in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield dirpath, sorted(f for f in files if not f.startswith("."))


def scan_image_folder(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """(classes, [(path, label)]) of a folder of class folders, with one-line errors."""
    if not root.exists():
        raise UserError(f"data path does not exist: {root}")
    if not root.is_dir():
        raise UserError(f"data path is not a folder: {root}")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        if any(root.iterdir()):
            raise UserError(f"data folder has no class subfolders (expected ROOT/<class>/<image>): {root}")
        raise UserError(f"data folder is empty: {root}")
    names = [d.name for d in dirs]
    if classes is not None and names != classes:
        missing = sorted(set(classes) - set(names))
        extra = sorted(set(names) - set(classes))
        what = f"lacks class {missing[0]!r}" if missing else f"has class {extra[0]!r} that train/ lacks" if extra else "orders its classes differently"
        raise UserError(f"data folder {root} {what}: its classes must be the training classes")
    samples = []
    for label, d in enumerate(dirs):
        found = [(os.path.join(dp, f), label) for dp, files in _walk_once(d) for f in files if f.lower().endswith(IMG_EXTENSIONS)]
        if not found:
            raise UserError(f"class folder {d} has no images ({', '.join(IMG_EXTENSIONS)}): remove it or add images")
        samples += found
    if len(dirs) < 2:
        raise UserError(f"data folder needs at least 2 classes with images, found {len(dirs)}: {root}")
    return names, samples


def check_images(samples: list[tuple[str, int]], strict: bool = False, limit: int = 20000, seed: int = 0):
    """The readable samples. Default: each header is opened (cheap; past ``limit`` files a
    random sample), failures are skipped with one warning. ``strict``: every image is
    decoded in full and the first failure is refused, naming the file."""
    from PIL import Image

    if strict:
        for path, _ in samples:
            try:
                read_rgb(path)
            except Exception as e:
                raise UserError(f"unreadable image {path}: {type(e).__name__} (--strict)") from None
        return samples
    todo = samples if len(samples) <= limit else random.Random(seed).sample(samples, limit)
    bad = set()
    for path, _ in todo:
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception:  # PIL raises many types for bad files
            bad.add(path)
    if bad:
        first = sorted(bad)[0]
        warn(f"skipped {len(bad)} unreadable image(s), first {first} (pass --strict to refuse them instead)")
    return [s for s in samples if s[0] not in bad]


# --------------------------------------------------------------------------- reading


def to_rgb(im):
    """Any PIL image as 8-bit RGB, the same way for every split (see the module's rules)."""
    import numpy as np
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        a = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if im.mode.startswith("I;16") or a.max() <= 65535 else float(a.max())
        im = Image.fromarray(np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        scale = 255.0 if a.size and np.nanmax(a) <= 1.0 else 1.0
        im = Image.fromarray(np.clip(np.nan_to_num(a) * scale + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


def read_rgb(path: str):
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return to_rgb(im)


class ImageFiles(Dataset):
    """(transformed image, label) of a list of files; a file that fails to decode is
    replaced by the next readable one of the list, with a warning naming it."""

    def __init__(self, samples: list[tuple[str, int]], transform):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        for step in range(min(len(self.samples), 50)):
            path, label = self.samples[(i + step) % len(self.samples)]
            try:
                img = read_rgb(path)
            except Exception as e:
                warn(f"unreadable image {path} ({type(e).__name__}): used the next image instead")
                continue
            return self.transform(img), label
        raise UserError(f"no readable image near {self.samples[i][0]}: the folder's images are broken")


# --------------------------------------------------------------------------- transforms


def _posterize(img, bits_to_keep, **_):
    """timm's posterize, defined at 0 bits as Pillow < 13 defined it: no bit kept, a black
    image. PosterizeIncreasing keeps 4 - int(0.4 * magnitude) bits and the magnitude noise
    (mstd 0.5, clamped at 10) reaches 10, so 0 bits is drawn in every long run; Pillow 13
    refuses it ("bits must be between or equal to 1 and 8") and the DataLoader worker dies."""
    from PIL import ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point([0] * 256 * len(img.getbands()))
    return ImageOps.posterize(img, bits_to_keep)


def safe_posterize(transform) -> None:
    """Point the posterize ops of a timm transform's RandAugment at `_posterize` (only this
    transform's ops: timm itself is left as it is)."""
    for t in getattr(transform, "transforms", []):
        for op in getattr(t, "ops", []):
            if op.name.startswith("Posterize"):
                op.aug_fn = _posterize


# DeiT's random-resized crop keeps 8-100% of the image's area: at 224 px a crop is at least
# ~63 px wide. Below 64 px input, the smallest crop keeps half the area instead (at 16 px an
# 8% crop is a 4x4 scrap): fitting the embedded ancestor to a folder of silhouettes reached
# 47.5% test top1 with it against 41.0% with 8% (one seed, benchmarks/own_data.py's folder).
SMALL_INPUT, SMALL_INPUT_MIN_AREA = 64, 0.5


def transforms(data_config: dict, augment: bool):
    """(train, eval) transforms of timm at a model's data config; training is DeiT's
    random-resized crop and RandAugment when ``augment``."""
    from timm.data import create_transform

    cfg = {k: data_config[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode") if k in data_config}
    small = int(cfg["input_size"][-1]) < SMALL_INPUT
    train_tf = create_transform(**cfg, is_training=augment, auto_augment=DEIT_RAND_AUGMENT if augment else None,
                                **({"scale": (SMALL_INPUT_MIN_AREA, 1.0)} if small and augment else {}))
    safe_posterize(train_tf)
    return train_tf, create_transform(**cfg, is_training=False)
