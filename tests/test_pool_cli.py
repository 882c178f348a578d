"""build-pool / pool through the CLI: DDP on 2 CPU processes, info/verify, bad input."""

import json

import pytest
import torch
import yaml
from test_cli import assert_one_line_error, cli, learngene

RECIPE = {
    "name": "tiny",
    "auxiliary": {
        "narrow": {"embed_dim": 16, "num_heads": 2, "depth": 2, "positions": "front,end", "epochs": 1, "lr": 1e-3},
        "wide": {"embed_dim": 32, "num_heads": 2, "depth": 2, "positions": "end", "epochs": 1, "lr": 1e-3},
    },
    "distill": {"batch_size": 32, "max_steps": 3},
}


@pytest.fixture(scope="module")
def setup_dir(tmp_path_factory):
    """A tiny local-dir ancestor for the digits and a recipe file."""
    import timm

    from learngene.core.data import digits_data_config
    from learngene.core.io import save_local_dir

    d = tmp_path_factory.mktemp("cli_pool")
    torch.manual_seed(0)
    args = dict(img_size=16, patch_size=4, embed_dim=32, depth=4, num_heads=2, num_classes=10)
    m = timm.create_model("deit_tiny_patch16_224", **args)
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in digits_data_config().items()}
    cfg["num_classes"] = 10
    save_local_dir(m, d / "anc", "deit_tiny_patch16_224", args, cfg)
    (d / "tiny.yaml").write_text(yaml.safe_dump(RECIPE))
    return d


def build(setup_dir, out, *extra):
    return learngene(
        "build-pool",
        "--recipe",
        setup_dir / "tiny.yaml",
        "--ancestor",
        f"local-dir:{setup_dir / 'anc'}",
        "--out",
        out,
        "-q",
        "--accelerator",
        "cpu",
        *extra,
        timeout=600,
    )


def test_ddp_two_cpu_processes(setup_dir, tmp_path):
    out = tmp_path / "ddp"
    r = build(setup_dir, out, "--devices", "2", "--strategy", "ddp")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / "pool.json").read_text())
    assert len(m["instances"]) == 4
    assert m["auxiliary"]["narrow"]["metrics"]["devices"] == 2
    assert m["auxiliary"]["wide"]["metrics"]["steps"] == 3
    assert not list(tmp_path.glob(".ddp*"))
    # info and verify on the result
    r = learngene("pool", "info", out)
    assert r.returncode == 0 and "narrow.b0" in r.stdout and "wide.b1" in r.stdout
    assert "instances/narrow.b0.safetensors" in r.stdout
    r = learngene("pool", "verify", out)
    assert r.returncode == 0 and "ok: 10 files" in r.stdout


def test_pool_verify_names_the_altered_file(setup_dir, tmp_path):
    out = tmp_path / "p"
    assert build(setup_dir, out).returncode == 0
    victim = out / "instances" / "wide.b1.safetensors"
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x00")
    assert_one_line_error(cli("pool", "verify", out), "checksum", str(victim))
    assert_one_line_error(cli("pool", "info", out), "checksum", str(victim))


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--recipe", "/no/recipe.yaml"], ["recipe not found", "/no/recipe.yaml"]),
        (["--ancestor", "no_such_vit_xyz"], ["unknown timm model"]),
        (["--ancestor", "resnet18"], ["not a ViT"]),
        (["--ancestor", "deit_tiny_patch16_224"], ["has no weights", "--pretrained"]),
        (["--data", "/no/such/data"], ["/no/such/data", "does not exist"]),
        (["--out", "/proc/forbidden/pool"], ["/proc/forbidden"]),
        (["--set", "distill.nope=1"], ["unknown recipe field distill.nope"]),
        (["--set", "auxiliary.narrow.num_heads=3"], ["not divisible"]),
        (["--set", "auxiliary.wide.depth=20"], ["deeper than the ancestor"]),
        (["--epochs", "0"], ["--epochs"]),
    ],
)
def test_build_pool_bad_input(setup_dir, tmp_path, args, needles):
    base = ["build-pool", "--recipe", setup_dir / "tiny.yaml", "--out", tmp_path / "p", "-q"]
    if "--ancestor" not in args:
        base += ["--ancestor", f"local-dir:{setup_dir / 'anc'}"]
    r = cli(*base, *args)
    assert_one_line_error(r, *needles)
    assert list(tmp_path.iterdir()) == [], "nothing written"


def test_existing_output_and_empty_data(setup_dir, tmp_path):
    (tmp_path / "exists").mkdir()
    r = cli("build-pool", "--recipe", setup_dir / "tiny.yaml", "--out", tmp_path / "exists")
    assert_one_line_error(r, "pool exists", "--force")
    (tmp_path / "empty").mkdir()
    r = build(setup_dir, tmp_path / "p", "--data", tmp_path / "empty")
    assert_one_line_error(r, "is empty", str(tmp_path / "empty"))


def test_pool_bad_paths(tmp_path):
    assert_one_line_error(cli("pool", "info", tmp_path / "nope"), "pool not found")
    (tmp_path / "x").mkdir()
    assert_one_line_error(cli("pool", "verify", tmp_path / "x"), "not a pool")
    (tmp_path / "x" / "pool.json").write_text("{broken")
    assert_one_line_error(cli("pool", "info", tmp_path / "x"), "corrupt manifest")
