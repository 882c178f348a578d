"""Integrity: what target ships is what the device measured, caches are keyed by what they
hold and checked when used, --force replaces only what learngene wrote, concurrent writers
chain, killed parents take their workers with them."""

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import assert_one_line_error, cli, copy_of, fresh_pool, write


def test_target_ships_the_measured_revision_with_the_hosts_accuracy(device_kit, tmp_path):
    from learngene.core.io import state_dict_sha256
    from learngene.pool import Pool
    from learngene.zoo import pool_zoo

    pool, _, lat = device_kit
    pool = copy_of(pool, tmp_path)
    rid = lat["kit"]["pool_revision"]
    # the pool moves on after the device measured: a newer revision with other weights
    r = cli("assemble", "--pool", pool, "--all", "--epochs", "1", "-q", "--accelerator", "cpu")
    assert r.returncode == 0, r.stderr
    assert Pool.open(pool).revision("latest")["id"] != rid
    # a forged accuracy in the file is not what target picks by
    forged = copy.deepcopy(lat)
    for m in forged["members"]:
        m["host_top1"] = 99.99 if m["id"] == "narrow" else 0.0
    r = cli(
        "target",
        "--pool",
        pool,
        "--latency-file",
        write(tmp_path, forged),
        "--max-latency-ms",
        "1000",
        "--json",
        "--no-train",
        "--format",
        "timm",
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["chosen"]["top1"] != 99.99
    with open(os.path.join(res["child"], "config.json")) as f:
        cfg = json.load(f)
    assert cfg["learngene"]["pool_revision"] == rid  # the revision the device timed, not the latest
    from safetensors.torch import load_file

    shipped = state_dict_sha256(load_file(os.path.join(res["child"], "model.safetensors")))
    p = Pool.open(pool)
    timed = state_dict_sha256(pool_zoo(p, rid).get(res["chosen"]["model"]).model().state_dict())
    assert shipped == timed
    # weights other than those the device timed are refused
    bad = copy.deepcopy(lat)
    bad["members"][0]["weights_sha256"] = "0" * 64
    assert_one_line_error(
        cli("target", "--pool", pool, "--latency-file", write(tmp_path, bad, "b.json"), "--max-latency-ms", "1000"),
        "other weights",
    )


def test_the_onnx_cache_is_keyed_by_the_graph_and_checked_at_use(tmp_path):
    import timm

    from learngene.core.io import file_sha256
    from learngene.onnx_cache import _cache_paths, onnx_file

    torch.manual_seed(0)
    args = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=10)
    gelu = timm.create_model("deit_tiny_patch16_224", **args).eval()
    relu = timm.create_model("deit_tiny_patch16_224", act_layer="relu", **args).eval()
    relu.load_state_dict(gelu.state_dict())  # the same weights, another activation
    assert _cache_paths(gelu, 16)[0] != _cache_paths(relu, 16)[0]
    pg, _ = onnx_file(gelu, 16)
    pr, _ = onnx_file(relu, 16)
    assert file_sha256(pg) != file_sha256(pr)
    # a cached file swapped for another model's (and its record with it) is caught when exported
    other = timm.create_model("deit_tiny_patch16_224", **args).eval()
    po, _ = onnx_file(other, 16)
    shutil.copyfile(po, pg)
    shutil.copyfile(po.with_suffix(".json"), pg.with_suffix(".json"))
    from learngene.formats import export_model

    out = export_model(
        gelu, tmp_path / "e", "deit_tiny_patch16_224", args, {"input_size": [3, 16, 16]}, {"id": "g"}, fmt="onnx"
    )
    rec = json.loads((out / "export.json").read_text())
    assert rec["max_abs_diff"] < 1e-4  # measured on the file shipped, against the model exported


def test_force_replaces_only_what_learngene_wrote(assembled, tmp_path):
    pool = copy_of(assembled, tmp_path)
    before = sorted(p.name for p in pool.iterdir())
    assert_one_line_error(cli("kit", "--pool", pool, "--out", pool, "--force", "--members", "narrow"), "is a pool")
    assert sorted(p.name for p in pool.iterdir()) == before and (pool / "pool.json").is_file()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.txt").write_text("years of work")
    assert_one_line_error(
        cli("export", f"{pool}:narrow", "--format", "timm", "--force", "--out", docs), "not something"
    )
    assert (docs / "thesis.txt").read_text() == "years of work"
    # a folder learngene wrote is replaced, saying so in one line
    out = tmp_path / "e"
    assert cli("export", f"{pool}:narrow", "--format", "timm", "--out", out).returncode == 0
    r = cli("export", f"{pool}:wide", "--format", "timm", "--force", "--out", out)
    assert r.returncode == 0 and "replaces the model folder" in r.stderr, r.stderr
    # two kits to one folder: the second is refused without --force
    kit = tmp_path / "kit"
    assert cli("kit", "--pool", pool, "--out", kit, "--members", "narrow", "--precision", "fp32").returncode == 0
    assert_one_line_error(
        cli("kit", "--pool", pool, "--out", kit, "--members", "narrow", "--precision", "fp32"), "exists"
    )


def test_a_kit_that_appears_meanwhile_is_not_replaced(assembled, tmp_path, monkeypatch):
    import learngene.measure.kit as K

    pool = copy_of(assembled, tmp_path)
    kit = tmp_path / "kit"
    real = K.staged_folder

    def racing(out, replace=True):  # another kit lands at the same path while this one is being written
        kit.mkdir()
        (kit / "kit.json").write_text(json.dumps({"format": "learngene-kit"}))
        return real(out, replace=replace)

    monkeypatch.setattr(K, "staged_folder", racing)
    assert_one_line_error(
        cli("kit", "--pool", pool, "--out", kit, "--members", "narrow", "--precision", "fp32", "-q"), "appeared"
    )
    assert json.loads((kit / "kit.json").read_text()) == {"format": "learngene-kit"}


def test_concurrent_assembles_chain(setup_dir, tmp_path):
    """Two assemblers at once, each a process: each waits for the pool's lock, starts from the
    newest revision, and records its own revision and child."""
    pool = fresh_pool(setup_dir, tmp_path)
    assert cli("assemble", "--pool", pool, "--all", "--epochs", "0", "-q").returncode == 0  # r1: the stitches
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "learngene.cli",
                "assemble",
                "--pool",
                str(pool),
                "--descendant",
                d,
                "--epochs",
                "1",
                "--train",
                "target",
                "--format",
                "timm",
                "-q",
                "--accelerator",
                "cpu",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for d in ("1,2", "0,1")
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    revs = json.loads((pool / "pool.json").read_text())["revisions"]
    assert [r["id"] for r in revs] == ["r1", "r2", "r3"]
    assert [r["parent"] for r in revs] == ["r0", "r1", "r2"]  # each started from the newest: a chain
    from learngene.pool import Pool

    p = Pool.open(pool)
    assert {"stitch-1-2", "stitch-0-1"} <= p.trained_ids(p.revision("latest"))
    assert sorted(t for r in revs for t in r["trained"]) == ["stitch-0-1", "stitch-1-2"]
    assert all((pool / "children" / c).is_dir() for c in ("stitch-0-1", "stitch-1-2"))
    assert cli("pool", "verify", pool).returncode == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's parent-death signal")
def test_a_killed_kit_takes_its_export_workers_with_it(assembled, tmp_path):
    pool = copy_of(assembled, tmp_path)
    env = {**os.environ, "LEARNGENE_HOME": str(tmp_path / "home")}  # an empty ONNX cache: every member exported
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "learngene.cli",
            "kit",
            "--pool",
            str(pool),
            "--out",
            str(tmp_path / "kit"),
            "--precision",
            "fp32",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def children():
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(p.pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]

    t0 = time.monotonic()
    kids = []
    while time.monotonic() - t0 < 120 and p.poll() is None:
        kids = [k for k in children() if _is_python(k)]
        if kids:
            break
        time.sleep(0.1)
    if not kids:
        p.kill()
        pytest.skip("the kit finished before its workers could be seen")
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.2)
    assert not any(_alive(k) for k in kids)


def _is_python(pid: int) -> bool:
    try:
        return "python" in open(f"/proc/{pid}/cmdline").read()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
