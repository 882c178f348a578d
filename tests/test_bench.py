"""bench on a real (tiny) pool: the measured accuracies equal the pool's own evaluation,
the kNN probe and the Pareto marking do what they say, the four report files are written,
and bad input is one line with nothing written."""

import json

import pandas as pd
import pytest
import torch
from helpers import assert_one_line_error, cli, fresh_pool

from learngene.core.evaluation import knn_top1
from learngene.measure.metrics import latency
from learngene.measure.report import mark_pareto


def test_knn_probe_votes_with_similarity_weights():
    # two tight clusters on the unit circle: every test point's neighbours share its label
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ty = torch.arange(40) % 2
    tr = centres[ty] + 0.05 * torch.randn(40, 2, generator=g)
    assert knn_top1(tr, ty, centres, torch.tensor([0, 1]), k=5) == 100.0
    # k covering all points: the vote is decided by exp(sim / T), not by counts. 3 far
    # points of class 1 against 1 point of class 0 right at the query.
    tr = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    q = torch.tensor([[1.0, 0.0]])
    assert knn_top1(tr, torch.tensor([0, 1, 1, 1]), q, torch.tensor([0]), k=4) == 100.0
    assert knn_top1(tr, torch.tensor([0, 1, 1, 1]), q, torch.tensor([0]), k=4, temperature=100.0) == 0.0


def test_pareto_marks_the_undominated_rows_per_batch_size():
    df = pd.DataFrame(
        {
            "infer_batch_size": [1, 1, 1, 1, 32],
            "top1": [90.0, 95.0, 94.0, 95.0, 10.0],
            "infer_step_time": [1.0, 2.0, 3.0, 2.5, 100.0],
        }
    )
    assert mark_pareto(df).tolist() == [True, True, False, False, True]


def test_latency_reports_median_p90_and_throughput():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    lat = latency(model, 4, 8, torch.device("cpu"), min_run_time=0.01)
    assert 0 < lat["median_s"] <= lat["p90_s"]
    assert lat["samples_per_sec"] == pytest.approx(4 / lat["median_s"])


def test_bench_measures_every_descendant_and_writes_the_report(setup_dir, tmp_path):
    from learngene.api import bench as bench_pool
    from learngene.pool import Pool
    from learngene.stitch.init import init_stitches
    from learngene.stitch.stitched import evaluate_specs
    from learngene.zoo import pool_data

    pool = fresh_pool(setup_dir, tmp_path)
    res = bench_pool(pool, batch_sizes="1,4", include=["ancestor"], min_run_time=0.01)
    df = res.df
    assert len(df) == 2 * 10 and set(df.infer_batch_size) == {1, 4}  # 9 descendants + the ancestor
    assert res.report.parent == pool / "reports" and res.report.name.startswith("cpu-")
    for name in ("frontier.csv", "frontier.json", "frontier.md", "frontier.png"):
        assert (res.report / name).stat().st_size > 0
    assert not list((pool / "reports").glob(".*partial"))
    saved = json.loads((res.report / "frontier.json").read_text())
    assert saved["meta"]["stitches"].startswith("0 of 7 trained") and len(saved["rows"]) == 20
    assert not df[df.kind == "stitch"].trained.any() and df[df.kind != "stitch"].trained.all()
    # the accuracies are the pool's own: the same lstsq init evaluated through PoolModel
    p = Pool.open(pool)
    pm, _ = p.model("latest")
    dm = pool_data(p, None, augment=False)
    init_stitches(pm, "lstsq", dm)
    ref = evaluate_specs(pm, pm.specs, dm.test_dataloader())
    b1 = df[df.infer_batch_size == 1].set_index("model")
    for sid, acc in ref.items():
        assert b1.loc[sid, "top1"] == pytest.approx(acc["top1"], abs=0.01)
    assert (df.knn_top1.between(0, 100)).all() and (df.infer_step_time > 0).all()
    assert df.groupby("infer_batch_size").pareto.any().all()
    assert b1.loc["ancestor", "param_count"] > b1.loc["narrow", "param_count"]


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["--batch-sizes", "0"], "--batch-sizes"),
        (["--include", "grown"], "--include"),
        (["--device", "tpu"], "--device"),
        (["--threads", "0"], "--threads"),
        (["--members", "narrow,nosuch"], "nosuch"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(setup_dir, tmp_path, args, culprit):
    pool = fresh_pool(setup_dir, tmp_path)
    r = cli("bench", "--pool", pool, *args)
    assert_one_line_error(r, culprit)
    assert not (pool / "reports").exists()


def test_a_partial_report_is_never_the_pools_frontier(tmp_path):
    from learngene.measure.budget import latest_report

    meta = {"device": "cpu", "device_name": "x", "threads": 2, "revision": "r1", "runtimes": {"torch": "2"}}
    for name, created, extra in (("full", "2026-01-01", {}), ("part", "2026-02-01", {"members": ["narrow"]})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "frontier.json").write_text(json.dumps({"meta": {**meta, "created": created, **extra}}))
    assert latest_report(tmp_path, "r1", "cpu", "x", 2, {"torch": "2"}) == tmp_path / "full"


def test_cli_missing_pool(tmp_path):
    r = cli("bench", "--pool", tmp_path / "nope")
    assert_one_line_error(r, "nope")


def test_pick_takes_the_most_accurate_within_budget_and_names_the_nearest():
    from learngene.core.errors import UserError
    from learngene.measure.budget import Budget, pick

    rows = [
        {"model": m, "top1": a, "infer_step_time": t, "infer_step_time_p90": 1.5 * t, "param_count": p}
        for m, a, t, p in (("a", 90.0, 1.0, 0.1), ("b", 95.0, 2.0, 0.2), ("c", 97.0, 3.0, 0.3), ("d", 94.0, 1.5, 0.1))
    ]
    assert pick(rows, Budget(2.5, latency="p90"))[0]["model"] == "d"  # b's p90 (3.0) is over budget
    best, alts, _ = pick(rows, Budget(2.5, latency="median"))
    assert best["model"] == "b" and [r["model"] for r in alts] == ["d", "c"]
    assert pick(rows, Budget(2.5, latency="median", max_params=150_000))[0]["model"] == "d"
    with pytest.raises(UserError, match="closest: a"):
        pick(rows, Budget(0.5, latency="median"))
    # a row whose timing is noisy is passed over while a trusted one fits, and the notes say so
    rows[1]["infer_step_spread"] = 3.0
    best, _, notes = pick(rows, Budget(2.5, latency="median"), wide_spread=0.5)
    assert best["model"] == "d" and "spread" in notes[0] and "b" in notes[0]
    for bad in (-5, 0, float("nan"), float("inf")):
        with pytest.raises(UserError, match="max-latency-ms"):
            Budget(bad)


def test_target_uses_this_device_report_and_exports_the_pick(setup_dir, tmp_path):
    from learngene.api import bench as bench_pool
    from learngene.api import target
    from learngene.measure.budget import Budget

    pool = fresh_pool(setup_dir, tmp_path)
    rep = bench_pool(pool, batch_sizes=[1], min_run_time=0.01)
    df = rep.df
    budget = float(df.infer_step_time_p90.median())
    res = target(pool, Budget(budget))  # the budget holds the p90 by default
    assert not res.measured_now and res.report == rep.report
    # the report keeps the measured latencies exactly (a rounded one at the budget flipped the pick)
    saved = json.loads((rep.report / "frontier.json").read_text())["rows"]
    assert [r["infer_step_time_p90"] for r in saved] == df.infer_step_time_p90.tolist()
    fits = df[df.infer_step_time_p90 <= budget]
    assert res.chosen["top1"] == fits.top1.max() and res.chosen["infer_step_time_p90"] <= budget
    cfg = json.loads((res.child / "config.json").read_text())
    assert res.child.name == res.chosen["model"] and cfg["learngene"]["descendant"]["id"] == res.chosen["model"]
    # nothing fits: one line naming the closest options, no child written
    r = cli("target", "--pool", pool, "--max-latency-ms", "0.000001", "--out", tmp_path / "c2")
    assert_one_line_error(r, "closest")
    assert not (tmp_path / "c2").exists()


def test_target_measures_once_keeps_the_measurement_and_reuses_it(setup_dir, tmp_path, capfd):
    pool = fresh_pool(setup_dir, tmp_path)
    assert cli("assemble", "--pool", pool, "--all", "--epochs", "0", "-q").returncode == 0  # stitches stored: r1
    r = cli("target", "--pool", pool, "--max-latency-ms", "0.000001")
    assert_one_line_error(r, "closest")
    # the budget was refused, but what was measured is kept (the next call does not measure again)
    assert len(list((pool / "reports").glob("*/frontier.json"))) == 1 and not (pool / "children").exists()
    # --no-train: the pick is exported as the revision holds it (training it would make a new
    # revision, whose members a report of this one no longer describes)
    # (--format timm: the cheapest export; the formats have tests of their own)
    r = cli("target", "--pool", pool, "--max-latency-ms", "1000", "--no-train", "--format", "timm", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert not out["measured_now"] and (pool / "children" / out["chosen"]["model"]).is_dir()
    # asked again: the same pick is there already (same member, revision, format): reused, nothing written
    r = cli("target", "--pool", pool, "--max-latency-ms", "1000", "--no-train", "--format", "timm", "--json")
    again = json.loads(r.stdout)
    assert r.returncode == 0 and again["reused"] and again["chosen"]["model"] == out["chosen"]["model"]
    # a pick still at its stitch initialisation is trained before export, as quietly as the verb
    # runs: no Lightning bar on stdout, which `--json` keeps for the JSON (a bar had reached it)
    from learngene.api import _finish
    from learngene.pool.store import Pool

    rows = json.loads(next((pool / "reports").glob("*/frontier.json")).read_text())["rows"]
    row = next(r for r in rows if r.get("trained") is False)
    capfd.readouterr()
    child, trained, _ = _finish(
        Pool.open(pool),
        row,
        revision="r1",
        data=None,
        out=tmp_path / "picked",
        force=False,
        train=True,
        fmt="timm",
        precision="fp32",
        progress=False,
    )
    printed = capfd.readouterr()
    assert trained and (child / "model.safetensors").is_file() and "Epoch" not in printed.out + printed.err
    # a folder that is something else is refused before anything is measured
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    r = cli("target", "--pool", pool, "--max-latency-ms", "1000", "--remeasure", "--out", tmp_path / "docs")
    assert_one_line_error(r, "exists")
    assert len(list((pool / "reports").glob("*/frontier.json"))) == 1


def test_bench_includes_adapted_models_on_their_own_task(setup_dir, tmp_path):
    pytest.importorskip("peft")
    from learngene.api import bench as bench_pool
    from learngene.core.training import TrainerArgs
    from learngene.deltas import tasks as api
    from learngene.zoo import resolve

    pool = fresh_pool(setup_dir, tmp_path)
    base = resolve(str(setup_dir / "anc"))
    api.adapt(
        base.load(),
        "digits:rot90",
        name="rot",
        adapters=pool / "adapters",
        ref=api.base_ref(str(setup_dir / "anc"), base),
        epochs=1,
        train_fraction=0.2,
        trainer_args=TrainerArgs(progress=False, accelerator="cpu"),
    )
    df = bench_pool(pool, batch_sizes=[1], include=["adapted"], min_run_time=0.01, write=False).df
    row = df[df.model == "adapted:rot"].iloc[0]
    assert row.kind == "adapted" and row.data == "digits:rot90"
    rec = json.loads((pool / "adapters" / "rot" / "learngene.json").read_text())
    assert abs(row.top1 - rec["test_top1"]) < 1e-6
