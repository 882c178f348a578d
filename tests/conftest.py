"""Session fixtures: what many modules need, built once per test process, in-process through
the CLI and the public API (helpers.py holds the functions they are built with)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import RECIPE, RECIPE3, cli, quiet, save_tiny_ancestor


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    """Never touch the user's cache: every test session gets its own LEARNGENE_HOME."""
    os.environ["LEARNGENE_HOME"] = str(tmp_path_factory.mktemp("learngene_home"))
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        # a worker per core: one thread each (and in the CLI processes they start), not two
        # workers fighting over every core
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    else:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    yield


@pytest.fixture
def tiny_vit():
    """A small real timm ViT (DeiT architecture), random init, eval mode."""
    import timm

    torch.manual_seed(0)
    return timm.create_model(
        "deit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=4, num_heads=2, num_classes=10
    ).eval()


@pytest.fixture(scope="session")
def recipe_dir(tmp_path_factory):
    """A tiny local-dir ancestor for the digits (``anc``) and the tiny recipes (``tiny.yaml``,
    depth 2; ``tiny3.yaml``, depth 3)."""
    d = tmp_path_factory.mktemp("recipes")
    save_tiny_ancestor(d / "anc")
    (d / "tiny.yaml").write_text(yaml.safe_dump(RECIPE))
    (d / "tiny3.yaml").write_text(yaml.safe_dump(RECIPE3))
    return d


@pytest.fixture(scope="session")
def setup_dir(recipe_dir, tmp_path_factory):
    """The shared test pool: ``pool``, depth 3 (9 descendants), distilled from ``anc`` through
    the CLI in this process. Read it, or take a private copy (helpers.fresh_pool) to write."""
    d = tmp_path_factory.mktemp("pool3")
    shutil.copytree(recipe_dir / "anc", d / "anc")
    shutil.copy(recipe_dir / "tiny3.yaml", d / "tiny3.yaml")
    r = cli(
        "build-pool", "--recipe", d / "tiny3.yaml", "--ancestor", f"local-dir:{d / 'anc'}", "--out", d / "pool",
        "-q", "--accelerator", "cpu",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return d


@pytest.fixture(scope="session")
def assembled(setup_dir, tmp_path_factory):
    """The test pool with its stitches stored (a revision, trained 0 epochs: at lstsq init)."""
    from learngene.assembly import AssembleSpec, assemble

    pool = shutil.copytree(setup_dir / "pool", tmp_path_factory.mktemp("assembled") / "pool")
    assemble(pool, train="all", spec=AssembleSpec(epochs=0), trainer_args=quiet(), progress=lambda m: None)
    return pool


@pytest.fixture(scope="session")
def device_kit(assembled, tmp_path_factory):
    """A kit of two members (fp32) and the latency file its probe.py wrote (a fresh process: the
    probe is what a device runs)."""
    d = tmp_path_factory.mktemp("kit")
    pool = shutil.copytree(assembled, d / "pool")
    kit = d / "kit"
    r = cli(
        "kit", "--pool", pool, "--out", kit, "--members", "narrow,wide", "--precision", "fp32", "--batch-sizes", "1"
    )
    assert r.returncode == 0, r.stderr
    lat = d / "latency.json"
    r = subprocess.run(
        [sys.executable, kit / "probe.py", "--threads", "1", "--min-run-time", "0.02", "--out", lat],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return pool, kit, json.loads(lat.read_text())
