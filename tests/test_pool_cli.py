"""build-pool / pool through the CLI: DDP on 2 CPU processes, info/verify, bad input."""

import json

import pytest
from helpers import assert_one_line_error, cli, learngene


def build(recipe_dir, out, *extra):
    """build-pool of the tiny recipe: in this process, but a DDP run (its processes are the point)."""
    run = learngene if "--devices" in extra else cli
    return run(
        "build-pool",
        "--recipe",
        recipe_dir / "tiny.yaml",
        "--ancestor",
        f"local-dir:{recipe_dir / 'anc'}",
        "--out",
        out,
        "-q",
        "--accelerator",
        "cpu",
        *extra,
    )


@pytest.mark.slow  # two processes and a process group: ~25 s on 2 cores; CI runs it
def test_ddp_two_cpu_processes(recipe_dir, tmp_path):
    out = tmp_path / "ddp"
    r = build(recipe_dir, out, "--devices", "2", "--strategy", "ddp")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / "pool.json").read_text())
    assert len(m["instances"]) == 4
    assert m["auxiliary"]["narrow"]["metrics"]["devices"] == 2
    assert m["auxiliary"]["wide"]["metrics"]["steps"] == 3
    assert not list(tmp_path.glob(".ddp*"))
    # info and verify on the result
    r = cli("pool", "info", out)
    assert r.returncode == 0 and "narrow.b0" in r.stdout and "wide.b1" in r.stdout
    assert "instances/narrow.b0.safetensors" in r.stdout
    r = cli("pool", "verify", out)
    assert r.returncode == 0 and "ok: 10 files" in r.stdout


def test_pool_verify_names_the_altered_file(recipe_dir, tmp_path):
    out = tmp_path / "p"
    assert build(recipe_dir, out).returncode == 0
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
def test_build_pool_bad_input(recipe_dir, tmp_path, args, needles):
    base = ["build-pool", "--recipe", recipe_dir / "tiny.yaml", "--out", tmp_path / "p", "-q"]
    if "--ancestor" not in args:
        base += ["--ancestor", f"local-dir:{recipe_dir / 'anc'}"]
    r = cli(*base, *args)
    assert_one_line_error(r, *needles)
    assert list(tmp_path.iterdir()) == [], "nothing written"


def test_existing_output_and_empty_data(recipe_dir, tmp_path):
    (tmp_path / "exists").mkdir()
    r = cli("build-pool", "--recipe", recipe_dir / "tiny.yaml", "--out", tmp_path / "exists")
    assert_one_line_error(r, "pool exists", "--force")
    (tmp_path / "empty").mkdir()
    r = build(recipe_dir, tmp_path / "p", "--data", tmp_path / "empty")
    assert_one_line_error(r, "is empty", str(tmp_path / "empty"))


def test_pool_bad_paths(tmp_path):
    assert_one_line_error(cli("pool", "info", tmp_path / "nope"), "pool not found")
    (tmp_path / "x").mkdir()
    assert_one_line_error(cli("pool", "verify", tmp_path / "x"), "not a pool")
    (tmp_path / "x" / "pool.json").write_text("{broken")
    assert_one_line_error(cli("pool", "info", tmp_path / "x"), "corrupt manifest")
