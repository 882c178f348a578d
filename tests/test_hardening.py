"""Hardening, round two: the regressions and rough edges a new user and an audit hit on the
documented paths, each through the CLI (or the API) on a tiny real pool."""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import adapt_args, assert_one_line_error, cli, fresh_pool

# --------------------------------------------------------------------------- documented paths


def test_adapt_apply_merge_and_describe_an_assembled_child(setup_dir, tmp_path):
    """`adapt apply --merge` on a stitched child (README's example) and `ancestor` of it."""
    pytest.importorskip("peft")
    import timm

    pool = fresh_pool(setup_dir, tmp_path)
    assert (
        cli("assemble", "--pool", pool, "--descendant", "1,2", "--epochs", "0", "--format", "timm", "-q").returncode
        == 0
    )
    r = cli(*adapt_args("stitch-1-2", pool, fraction=0.3))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "merged"
    r = cli(
        "adapt", "apply", "--pool", pool, "--model", "stitch-1-2", "--delta", "rot", "--merge", "--out", out, "--json"
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["merged"] and res["merge_max_logit_diff"] < 1e-4
    m = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert type(m).__name__ == "StitchedViT" and m(torch.zeros(1, 3, 16, 16)).shape == (1, 10)
    # anything export wrote can be described
    r = cli("ancestor", "--model", str(pool / "children" / "stitch-1-2"), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["architecture"] == "learngene_stitched_vit" and "->" in str(info["embed_dim"])


def test_ligo_grows_to_a_width_that_is_not_a_multiple(setup_dir, tmp_path):
    """LiGO's width operator is learned: 32 -> 48 (not a multiple) grows (it crashed)."""
    out = tmp_path / "g"
    r = cli(
        "grow",
        "--model",
        f"local-dir:{setup_dir / 'anc'}",
        "--method",
        "ligo",
        "--embed-dim",
        "48",
        "--steps",
        "2",
        "--out",
        out,
        "--json",
        "-q",
        "--accelerator",
        "cpu",
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["target"]["embed_dim"] == 48 and (out / "model.safetensors").is_file()


def test_threads_and_workers_never_exceed_the_cores(monkeypatch, capsys):
    from learngene.core import callbacks as training
    from learngene.core import limits

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(limits, "cores", lambda: 4)
    assert training.core_plan(None, 2) == 2 and training.core_plan(None, 0) == 4 and training.core_plan(3, 1) == 3
    # a busy machine is said once, with the flag that helps
    monkeypatch.delenv("LEARNGENE_NO_LOAD_WARNING", raising=False)
    monkeypatch.setattr(training, "_WARNED_BUSY", [])
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    training.warn_if_busy(4)
    training.warn_if_busy(4)
    err = capsys.readouterr().err
    assert err.count("load average is 9.0 on 4 cores") == 1 and "--threads" in err


def test_every_count_has_a_bound(setup_dir, tmp_path):
    pool = fresh_pool(setup_dir, tmp_path)
    anc = f"local-dir:{setup_dir / 'anc'}"
    cases = [
        (["build-pool", "--recipe", "embedded", "--out", tmp_path / "p", "--threads", "100000"], "--threads"),
        (["build-pool", "--recipe", "embedded", "--out", tmp_path / "p", "--workers", "100000"], "--workers"),
        (["bench", "--pool", pool, "--batch-sizes", "100000"], "--batch-sizes"),
        (["bench", "--pool", pool, "--threads", "0"], "--threads"),
        (["assemble", "--pool", pool, "--all", "--seed", "-1"], "--seed"),
        (["assemble", "--pool", pool, "--all", "--seed", "4294967296"], "--seed"),
        (["assemble", "--pool", pool, "--all", "--epochs", "99999999"], "--epochs"),
        (["assemble", "--pool", pool, "--all", "--batch-size", "0"], "--batch-size"),
        (
            ["grow", "--model", anc, "--method", "expand", "--embed-dim", "100000", "--out", tmp_path / "g"],
            "--embed-dim",
        ),
        (["grow", "--model", anc, "--method", "expand", "--depth", "100000", "--out", tmp_path / "g"], "--depth"),
        (
            [
                "grow",
                "--model",
                anc,
                "--method",
                "expand",
                "--embed-dim",
                "16000",
                "--depth",
                "1000",
                "--out",
                tmp_path / "g",
            ],
            "GiB",
        ),
        (
            ["adapt", "--pool", pool, "--model", anc, "--data", "digits:rot90", "--name", "t", "--rank", "100000"],
            "--rank",
        ),
        (
            ["adapt", "--pool", pool, "--model", anc, "--data", "digits:rot90", "--name", "t", "--fraction", "0.001"],
            "fraction",
        ),
        (["target", "--pool", pool, "--max-latency-ms", "-5"], "--max-latency-ms"),
        (["target", "--pool", pool, "--max-latency-ms", "nan"], "--max-latency-ms"),
    ]
    for args, needle in cases:
        assert_one_line_error(cli(*args), needle)
    assert not (tmp_path / "p").exists() and not (tmp_path / "g").exists() and not (pool / "adapters").exists()


def test_probe_bounds_its_threads_and_batches(tmp_path):
    probe = os.path.join(os.path.dirname(__import__("learngene").__file__), "measure", "probe.py")
    for args, needle in (
        (["--threads", "10000"], "--threads"),
        (["--min-run-time", "-1"], "--min-run-time"),
        (["--batch-sizes", "0"], "--batch-sizes"),
        (["--batch-sizes", "x"], "--batch-sizes"),
    ):
        r = subprocess.run(
            [sys.executable, probe, "--kit", tmp_path, *args], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr


# --------------------------------------------------------------------------- revisions by content


def test_revisions_store_only_what_they_changed_and_gc(setup_dir, tmp_path):
    from learngene.pool import Pool

    pool = fresh_pool(setup_dir, tmp_path)
    r0 = Pool.open(pool).storage()["bytes_on_disk"]
    for d in ("1,2", "2,3"):  # two assembles, each training one descendant
        r = cli(
            "assemble", "--pool", pool, "--descendant", d, "--epochs", "1", "--no-program", "-q", "--accelerator", "cpu"
        )
        assert r.returncode == 0, r.stderr
    r = cli("target", "--pool", pool, "--max-latency-ms", "1000", "--format", "timm", "-q")
    assert r.returncode == 0, r.stderr
    p = Pool.open(pool)
    st = p.storage()
    written = sum((pool / e["file"]).stat().st_size for rev in p.revisions for e in rev["files"])
    changed = 0  # the bytes of the pieces these runs really changed (their content differs from the parent's)
    for rev in p.revisions:
        parent = p.pieces(rev["parent"])
        changed += sum(
            (pool / e["file"]).stat().st_size
            for e in rev["files"]
            if parent.get(e["id"], {}).get("sha256") != e["sha256"]
        )
    assert written == changed and st["bytes_on_disk"] <= 1.3 * (r0 + changed)
    assert st["bytes_on_disk"] < r0 * (1 + len(p.revisions))  # not a full copy per revision
    assert st["revision_bytes"]["r0"] == r0 and all(
        v >= st["revision_bytes"]["r0"] * 0.9 for v in st["revision_bytes"].values()
    )
    info = json.loads(cli("pool", "info", pool, "--json").stdout)
    assert info["storage"]["bytes_on_disk"] == st["bytes_on_disk"]
    assert cli("pool", "verify", pool).returncode == 0
    # gc: the first revision no child or report names is folded into the next; every revision
    # kept still loads to the same weights, and pool verify re-hashes every file
    before = {rid: p.pieces(rid) for rid in [r["id"] for r in p.revisions]}
    res = json.loads(cli("pool", "gc", pool, "--json").stdout)
    p = Pool.open(pool)
    assert set(res["revisions"]) | set(r["id"] for r in p.revisions) == set(before)
    for rev in p.revisions:
        assert {k: e["sha256"] for k, e in p.pieces(rev["id"]).items()} == {
            k: e["sha256"] for k, e in before[rev["id"]].items()
        }
    assert cli("pool", "verify", pool).returncode == 0 and not p.leftovers()


# --------------------------------------------------------------------------- wrong answers, wasted minutes


def test_ancestor_data_is_named_and_describes_what_reads_it(setup_dir, tmp_path):
    r = cli("ancestor", "--model", f"local-dir:{setup_dir / 'anc'}", "--data", "digits", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["data"] == "digits"


def test_bad_flags_are_refused_before_the_pool_is_read(setup_dir, tmp_path, monkeypatch):
    from learngene.pool import store

    pool = fresh_pool(setup_dir, tmp_path)

    def never(*a, **k):
        raise AssertionError("the pool was opened before a bad flag was refused")

    monkeypatch.setattr(store.Pool, "open", classmethod(lambda cls, *a, **k: never()))
    for args, needle in (
        (["--descendant", "x,y"], "--descendant"),
        (["--params", "-3"], "--params"),
        (["--size", "huge"], "huge"),
    ):
        assert_one_line_error(cli("assemble", "--pool", pool, *args), needle)
    if not torch.cuda.is_available():
        monkeypatch.undo()
        assert_one_line_error(cli("assemble", "--pool", pool, "--all", "--epochs", "1", "--accelerator", "gpu"), "GPU")


def test_frontier_png_shows_what_target_picks_by(tmp_path):
    import pandas as pd

    from learngene.measure.report import frontier_figure

    rows = [
        dict(
            model=m,
            kind=k,
            trained=t,
            top1=a,
            infer_step_time=ms,
            infer_step_time_p90=ms * 1.2,
            param_count=p,
            infer_batch_size=1,
            data="digits",
            runtime="torch",
            precision="fp32",
            pareto=True,
        )
        for m, k, t, a, ms, p in (
            ("narrow", "narrow", True, 90.0, 1.0, 0.2),
            ("wide", "wide", True, 96.0, 3.0, 1.2),
            ("stitch-1-2", "stitch", False, 93.0, 2.0, 0.5),
            ("adapted:rot", "adapted", True, 60.0, 1.0, 0.2),
        )
    ]
    rows[-1]["data"] = "digits:rot90"
    meta = {"pool": "p", "device_name": "cpu", "threads": 1, "revision": "r1", "data": "digits"}
    fig, info = frontier_figure(pd.DataFrame(rows), meta)
    assert info["x"] == "infer_step_time_p90" and info["recommended"] in {"narrow", "wide", "stitch-1-2"}
    assert "adapted:rot" in info["other_tasks"] and "adapted:rot" not in info["plotted"]
    labels = info["legend"]
    assert "untrained (stitch at init)" in labels and any("recommended" in lab for lab in labels)
    _, info1 = frontier_figure(pd.DataFrame(rows[:1]), meta)  # a one-point front: nothing drawn, no legend entry
    assert "Pareto front" not in info1["legend"] and "untrained (stitch at init)" not in info1["legend"]


def test_cli_spellings_are_one_convention(setup_dir, tmp_path):
    from learngene.cli import build_parser

    p = build_parser()

    def parse(*argv):
        return p.parse_known_args([str(a) for a in argv])[0]

    # the runtime / precision of a member: singular or plural, in bench and target alike
    for verb in ("bench", "target"):
        for flag in ("--runtime", "--runtimes"):
            assert parse(verb, flag, "onnxruntime", "--max-latency-ms", "1").runtime == "onnxruntime"
        for flag in ("--precision", "--precisions"):
            assert parse(verb, flag, "int8", "--max-latency-ms", "1").precision == "int8"
    # Lightning's training precision is --train-precision; assemble's --precision takes fp32/int8 (the export)
    ns = parse("assemble", "--train-precision", "bf16-mixed", "--precision", "int8")
    assert ns.train_precision == "bf16-mixed" and ns.export_precision == "int8"
    assert parse("assemble", "--descendant", "1,2").config == "1,2"
    # the model a verb works on: --model everywhere
    assert parse("ancestor", "--model", "embedded").ancestor == "embedded"
    assert parse("build-pool", "--model", "embedded").ancestor == "embedded"
    assert parse("grow", "--model", "x", "--method", "expand", "--out", "o").source == "x"
    assert parse("export", "--model", "x", "--out", "o").model_flag == "x"
    # training verbs take --batch-size; build-pool --lr / --seed reach the recipe
    for verb in ("assemble", "adapt", "build-pool"):
        assert parse(verb, "--batch-size", "32").batch_size == 32
    r = cli(
        "build-pool",
        "--recipe",
        setup_dir / "tiny3.yaml",
        "--model",
        f"local-dir:{setup_dir / 'anc'}",
        "--out",
        tmp_path / "p",
        "--lr",
        "0.002",
        "--seed",
        "3",
        "--batch-size",
        "32",
        "-q",
        "--accelerator",
        "cpu",
    )
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "p" / "pool.json").read_text())["recipe"]
    assert rec["distill"]["seed"] == 3 and rec["distill"]["batch_size"] == 32
    assert all(a["lr"] == 0.002 for a in rec["auxiliary"].values())
    # the old spellings still work, saying what replaces them
    r = cli(
        "assemble",
        "--pool",
        tmp_path / "p",
        "--config",
        "narrow",
        "--epochs",
        "0",
        "--format",
        "timm",
        "-q",
        "--precision",
        "32-true",
    )
    assert r.returncode == 0 and "--descendant" in r.stderr and "--train-precision" in r.stderr, r.stderr
