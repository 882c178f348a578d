"""The CLI as a user meets it: real subprocesses, exit codes, one-line errors."""

import json

import pytest
from helpers import assert_one_line_error, cli, learngene


def test_help_lists_every_verb():
    r = learngene("--help")
    assert r.returncode == 0
    for verb in ("build-pool", "assemble", "bench", "target", "grow", "adapt", "pool", "ancestor"):
        assert verb in r.stdout


def test_every_verb_help_ends_with_its_docs_page():
    from learngene.cli import VERBS

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    for verb in VERBS:
        r = cli(verb, "--help")
        assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == f"docs: docs/{verb}.md", verb
        assert (root / "docs" / f"{verb}.md").is_file(), f"docs/{verb}.md is missing"


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--bogus"], ["unrecognized arguments"]),
        (["ancestor", "--ancestor", "no_such_vit_xyz"], ["unknown timm model", "no_such_vit_xyz"]),
        (["ancestor", "--ancestor", "resnet18"], ["resnet18", "not a ViT"]),
        (["ancestor", "--checkpoint", "/no/such.safetensors"], ["checkpoint not found", "/no/such.safetensors"]),
        (
            ["ancestor", "--ancestor", "deit_tiny_patch16_224", "--pretrained", "--checkpoint", "x"],
            ["not allowed with"],
        ),
        (["ancestor", "--ancestor", "deit_tiny_patch16_224", "--data", "/no/such/dir"], ["/no/such/dir"]),
        (["ancestor", "--epochs", "0"], ["--epochs"]),
    ],
)
def test_bad_input_exit_2_one_line(args, needles, tmp_path):
    assert_one_line_error(cli(*args, home=tmp_path), *needles)


def test_corrupt_checkpoint_exit_2(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    assert_one_line_error(
        learngene("ancestor", "--checkpoint", bad), "cannot read checkpoint", str(bad)
    )  # a real process
    assert_one_line_error(
        cli("ancestor", "--checkpoint", bad), "cannot read checkpoint", str(bad)
    )  # the same in-process


def test_ancestor_evaluates_on_an_image_folder(tmp_path, tiny_vit):
    from helpers import make_image_folder

    from learngene.core.localdir import save_local_dir

    make_image_folder(tmp_path / "imgs", classes=[str(i) for i in range(10)], per_class=10, size=16)
    args = dict(img_size=16, patch_size=4, embed_dim=32, depth=4, num_heads=2, num_classes=10)
    cfg = {"input_size": [3, 16, 16], "mean": [0.5] * 3, "std": [0.5] * 3, "num_classes": 10, "crop_pct": 1.0}
    folder = save_local_dir(tiny_vit, tmp_path / "m", "deit_tiny_patch16_224", args, cfg)
    r = cli("ancestor", "--ancestor", f"local-dir:{folder}", "--data", tmp_path / "imgs", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["params"] == sum(p.numel() for p in tiny_vit.parameters())
    assert 0 <= info["data_top1"] <= 100 and info["source"] == f"local-dir:{folder}"
    # a head with another class count than the data is bad input
    r = cli("ancestor", "--ancestor", "deit_tiny_patch16_224", "--data", tmp_path / "imgs")
    assert_one_line_error(r, "10 classes", "1000")
