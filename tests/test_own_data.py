"""A user's own image folder through the CLI: images as users have them (grayscale, RGBA,
palette, 16-bit, CMYK, EXIF-rotated), broken files (truncated, empty, not an image), symlink
loops, empty class folders, an ancestor fitted to the folder's classes and used by
build-pool, and a pool refusing data whose classes differ."""

import json
import os

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, cli, learngene, save_tiny_ancestor
from PIL import Image

CLASSES = ("ant", "bee", "cow")


def pattern(c: int, i: int, size: int = 20) -> np.ndarray:
    """A class-dependent 8-bit grayscale picture (so a model can tell the classes apart)."""
    rng = np.random.default_rng(100 * c + i)
    a = rng.integers(0, 60, (size, size)).astype(np.uint8)
    a[:, c * size // 3 : (c + 1) * size // 3] += 150
    return a


def folder(root, per_class=10, save=None, classes=CLASSES):
    for c, name in enumerate(classes):
        for split in ("train", "val"):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class if split == "train" else 4):
                (save or (lambda a, p: Image.fromarray(a, "L").save(p)))(
                    pattern(c, i + (0 if split == "train" else 50)), d / f"{i}.png"
                )
    return root


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny local-dir ViT with a 10-class head, reading 16x16 images."""
    d = tmp_path_factory.mktemp("own")
    save_tiny_ancestor(d / "m", mean=[0.5] * 3, std=[0.5] * 3)
    return d / "m"


def test_every_image_mode_becomes_the_same_rgb(tmp_path):
    from learngene.core.images import read_rgb

    a = pattern(1, 0)
    ref = np.asarray(Image.fromarray(a, "L").convert("RGB"))
    files = {
        "L.png": Image.fromarray(a, "L"),
        "RGB.png": Image.fromarray(a, "L").convert("RGB"),
        "P.png": Image.fromarray(a, "L").convert("P"),
        "I16.png": Image.fromarray(a.astype(np.uint16) * 257),
        "RGBA.png": Image.merge("RGBA", [Image.fromarray(a, "L")] * 3 + [Image.new("L", a.shape[::-1], 255)]),
        "CMYK.jpg": Image.fromarray(a, "L").convert("CMYK"),
    }
    for name, im in files.items():
        im.save(tmp_path / name, **({"quality": 100} if name.endswith("jpg") else {}))
        got = np.asarray(read_rgb(tmp_path / name))
        assert got.shape == ref.shape, name
        tol = 12 if name.endswith("jpg") else 1
        assert np.abs(got.astype(int) - ref).max() <= tol, (name, np.abs(got.astype(int) - ref).max())
    # 16-bit is scaled, not clipped to white (convert('RGB') gives 255 almost everywhere)
    assert (
        np.asarray(Image.open(tmp_path / "I16.png").convert("RGB")).mean()
        > 250
        > np.asarray(read_rgb(tmp_path / "I16.png")).mean()
    )
    # transparent pixels are composited on white when nothing is opaque ...
    clear = Image.merge("RGBA", [Image.fromarray(a, "L")] * 3 + [Image.new("L", a.shape[::-1], 0)])
    clear.save(tmp_path / "clear.png")
    assert np.asarray(read_rgb(tmp_path / "clear.png")).min() == 255
    # ... and on the shade that contrasts with the subject: a light cut-out stays visible on
    # black, a dark one on white
    for subject, background in ((230, 0), (25, 255)):
        cut = np.zeros(a.shape, np.uint8)
        cut[2:-2, 2:-2] = 255
        fill = Image.new("L", a.shape[::-1], subject)
        Image.merge("RGBA", [fill] * 3 + [Image.fromarray(cut, "L")]).save(tmp_path / "cut.png")
        got = np.asarray(read_rgb(tmp_path / "cut.png"))[..., 0]
        assert got[0, 0] == background and got[a.shape[0] // 2, a.shape[1] // 2] == subject
    # EXIF orientation 6 (rotate 90 clockwise to view) is applied
    im = Image.fromarray(a, "L").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    got = np.asarray(read_rgb(tmp_path / "rot.jpg"))[..., 0].astype(int)
    assert np.abs(got - np.rot90(a, -1)).mean() < 6


def test_a_16_bit_copy_of_a_folder_scores_what_the_8_bit_one_does(tmp_path, tiny_dir):
    eight = folder(tmp_path / "eight")
    sixteen = folder(tmp_path / "sixteen", save=lambda a, p: Image.fromarray(a.astype(np.uint16) * 257).save(p))
    tops = []
    for d in (eight, sixteen):
        r = cli(*fit(tiny_dir, d, 1))
        assert r.returncode == 0, r.stderr
        tops.append(json.loads(r.stdout)["test_top1"])
    assert tops[0] == tops[1]


def fit(model_dir, data, epochs) -> tuple:
    """The CLI arguments that fit the tiny ancestor to a folder, printing JSON."""
    return (
        "ancestor",
        "--ancestor",
        f"local-dir:{model_dir}",
        "--data",
        data,
        "--fine-tune",
        "--epochs",
        epochs,
        "--json",
        "-q",
    )


def broken_folder(tmp_path):
    root = folder(tmp_path / "data")
    good = (root / "train" / "bee" / "0.png").read_bytes()
    (root / "train" / "bee" / "empty.png").write_bytes(b"")
    (root / "train" / "bee" / "notes.png").write_text("not an image")
    jpg = root / "train" / "cow" / "cut.jpg"
    Image.fromarray(pattern(2, 99), "L").convert("RGB").save(jpg, quality=95)
    jpg.write_bytes(jpg.read_bytes()[:-100])  # truncated: its header still reads (verify passes), decoding fails
    assert good
    return root, jpg


def test_unreadable_files_are_skipped_with_a_count_or_refused_with_strict(tmp_path, tiny_dir):
    root, jpg = broken_folder(tmp_path)
    # a real process: the DataLoader workers that meet the truncated file write to its stderr
    r = learngene(*fit(tiny_dir, root, 1), home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    assert "skipped 2 unreadable image(s)" in r.stderr  # empty.png and notes.png, named by their count
    assert "cut.jpg" in r.stderr  # the truncated one fails only when decoded: replaced, and named
    out = tmp_path / "pools" / "p"
    r = cli("build-pool", "--ancestor", f"local-dir:{tiny_dir}", "--data", root, "--strict", "--out", out)
    assert_one_line_error(r, "unreadable image", "--strict")
    assert not (tmp_path / "pools").exists()


@pytest.mark.parametrize(
    "make, needles",
    [
        (lambda r: (r / "train" / "deer").mkdir(), ["class folder", "deer", "no images"]),
        (
            lambda r: [p.unlink() for p in (r / "val" / "cow").iterdir()] and (r / "val" / "cow").rmdir(),
            ["lacks class", "cow"],
        ),
        (lambda r: [os.symlink(".", r / "train" / "ant" / n) for n in ("loop", "again")], None),
    ],
)
def test_folder_shapes(tmp_path, tiny_dir, make, needles):
    from learngene.core.data import LearngeneDataModule

    root = folder(tmp_path / "data")
    make(root)
    r = cli(*fit(tiny_dir, root, 1))
    if needles:
        assert_one_line_error(r, *needles)
        assert not (tmp_path / "home").exists()
        return
    assert r.returncode == 0, r.stderr  # two links to '.': no hang, no class counted 41 times
    dm = LearngeneDataModule(root, data_config={"input_size": (3, 16, 16), "mean": (0.5,) * 3, "std": (0.5,) * 3})
    assert dm.fingerprint()["counts"]["train"] == 3 * 10


def test_a_shrunk_start_lies_between_the_base_and_a_fresh_init_of_its_architecture(tiny_dir):
    import lightning as L
    import timm

    from learngene.models.fitted import start_model
    from learngene.models.refs import load_model

    base = load_model(f"local-dir:{tiny_dir}", progress=False)
    mine = base.model.state_dict()
    body = [k for k in mine if not k.startswith("head")]
    same = start_model(base, 3, 1.0)
    assert same.num_classes == 3 and all(torch.equal(same.state_dict()[k], mine[k]) for k in body)
    L.seed_everything(1, verbose=False)  # tiny_dir was drawn from seed 0
    half = start_model(base, 3, 0.5).state_dict()
    L.seed_everything(1, verbose=False)  # tiny_dir was drawn from seed 0
    fresh = timm.create_model(base.architecture, pretrained=False, **base.model_args).state_dict()
    for k in body:
        assert torch.allclose(half[k], 0.5 * mine[k] + 0.5 * fresh[k], atol=1e-6), k
    assert not torch.allclose(half["blocks.0.attn.qkv.weight"], mine["blocks.0.attn.qkv.weight"])
    L.seed_everything(1, verbose=False)  # tiny_dir was drawn from seed 0
    again = start_model(base, 3, 0.5).state_dict()
    assert all(torch.equal(again[k], half[k]) for k in half)  # a seed gives one start


def test_one_class_is_refused(tmp_path, tiny_dir):
    root = folder(tmp_path / "data", classes=("only",))
    assert_one_line_error(cli("ancestor", "--ancestor", f"local-dir:{tiny_dir}", "--data", root), "at least 2 classes")


def test_fitted_ancestor_is_cached_and_build_pool_takes_it(tmp_path, tiny_dir):
    root = folder(tmp_path / "data")
    r = cli(*fit(tiny_dir, root, 2))
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["num_classes"] == 3 and 0 <= first["test_top1"] <= 100 and "before_knn_top1" in first
    assert "before_top1" not in first  # a 10-class head says nothing about 3 classes: the kNN probe does
    # every start was tried on validation, and the one that trained the run is recorded
    assert len(first["start_probe"]) == 2 and first["keep"] in (1.0, 0.5) and first["lr"] == 5e-4
    again = json.loads(cli(*fit(tiny_dir, root, 2)).stdout)
    assert again["sha256"] == first["sha256"]  # cached: not fitted twice
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        json.dumps(
            {
                "name": "own",
                "auxiliary": {
                    "narrow": {"embed_dim": 16, "num_heads": 2, "depth": 2, "epochs": 1},
                    "wide": {"embed_dim": 32, "num_heads": 2, "depth": 2, "epochs": 1},
                },
                "distill": {"batch_size": 16, "max_steps": 2},
            }
        )
    )
    pool = tmp_path / "pool"
    r = cli(
        "build-pool",
        "--recipe",
        recipe,
        "--ancestor",
        f"local-dir:{tiny_dir}",
        "--data",
        root,
        "--out",
        pool,
        "-q",
        "--accelerator",
        "cpu",
        "--workers",
        "0",
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((pool / "pool.json").read_text())
    assert m["ancestor"]["sha256"] == first["sha256"] and m["data"]["classes"] == list(CLASSES)
    # the pool refuses data of other classes; the same classes in other files is a warning
    other = folder(tmp_path / "other", classes=("ant", "bee", "dog"))
    assert_one_line_error(cli("assemble", "--pool", pool, "--data", other, "--size", "base"), "classes", "dog")
    more = folder(tmp_path / "more", per_class=12)
    r = cli(
        "assemble",
        "--pool",
        pool,
        "--data",
        more,
        "--descendant",
        "narrow",
        "--epochs",
        "0",
        "-q",
        "--no-program",
        "--workers",
        "0",
        "--accelerator",
        "cpu",
    )
    assert r.returncode == 0 and "other files" in r.stderr, r.stderr


def test_ten_classes_of_other_names_are_not_the_ancestors_ten(tmp_path):
    """The embedded ancestor knows ten digits; a folder of ten animals has as many classes but
    not the same ones: build-pool must not distil the digit head into the pool."""
    save_tiny_ancestor(tmp_path / "digits", mean=[0.5] * 3, std=[0.5] * 3, label_names=[str(i) for i in range(10)])
    animals = folder(tmp_path / "animals", per_class=3, classes=tuple(f"animal{i}" for i in range(10)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        json.dumps(
            {
                "name": "own",
                "auxiliary": {
                    "narrow": {"embed_dim": 16, "num_heads": 2, "depth": 2},
                    "wide": {"embed_dim": 32, "num_heads": 2, "depth": 2},
                },
            }
        )
    )
    r = cli(
        "build-pool",
        "--recipe",
        recipe,
        "--ancestor",
        f"local-dir:{tmp_path / 'digits'}",
        "--data",
        animals,
        "--out",
        tmp_path / "p",
    )
    assert_one_line_error(r, "other classes", "--fine-tune")
    assert not (tmp_path / "p").exists()


def test_sigterm_while_fitting_the_ancestor_exits_143_and_caches_nothing(tmp_path, tiny_dir):
    import signal

    from helpers import start, wait_for

    root, home = folder(tmp_path / "data"), tmp_path / "home"
    p = start(
        "ancestor", "--ancestor", f"local-dir:{tiny_dir}", "--data", root, "--fine-tune", "--epochs", "500",
        env={"LEARNGENE_HOME": str(home)},
    )  # fmt: skip
    lines = []
    wait_for(lambda: lines.append(p.stderr.readline()) or "ancestor (fitting): epoch 1/" in lines[-1], proc=p)
    # the run's line says what the whole fit has left (its probes done), as its start did
    assert "; the fit: ~" in lines[-1] and lines[-1].rstrip().endswith("s left)"), lines[-1]
    assert any(not line.startswith("learngene: ") and "ancestor (fitting): starting (the fit: " in line
               for line in lines), lines  # fmt: skip
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == "learngene: interrupted"
    fitted = home / "ancestors" / "fitted"
    # no entry under a real name: the next run fits again rather than loading half a model
    assert not fitted.is_dir() or not [d for d in fitted.iterdir() if not d.name.startswith(".")]
