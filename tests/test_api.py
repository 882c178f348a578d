"""The public Python API is the CLI: the main job (build-pool, assemble --size, bench) run
through ``import learngene as lg`` alone gives the same members, params and accuracies as the
same job through the CLI on the same inputs; every verb documents its arguments."""

import json

import pytest
from helpers import cli, fresh_pool

import learngene as lg

VERBS = ("build_pool", "assemble", "bench", "target", "export", "kit", "grow", "adapt", "ancestor", "resolve")


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_is_one_documented_call(verb):
    doc = getattr(lg, verb).__doc__ or ""
    assert "Args:" in doc, f"lg.{verb} has no Args: section"
    assert callable(lg.adapt.apply) and callable(lg.adapt.ls)


def test_the_main_job_through_the_api_equals_the_cli(setup_dir, tmp_path):
    # the CLI: the shared test pool was built by `learngene build-pool` (in-process) from this
    # recipe and ancestor; a copy of it goes on through assemble and bench (this tiny ancestor
    # has no "tiny" member: DeiT-Ti/DeiT-B of 53k params is 3.5k)
    cli_pool = fresh_pool(setup_dir, tmp_path / "cli")
    for argv in (
        ("assemble", "--pool", cli_pool, "--size", "small", "--epochs", "1"),
        ("bench", "--pool", cli_pool, "--batch-sizes", "1", "--out", tmp_path / "cli-report"),
    ):
        r = cli(*argv, "-q")
        assert r.returncode == 0, r.stderr[-2000:]
    cli_rows = json.loads((tmp_path / "cli-report" / "frontier.json").read_text())["rows"]

    # the API, nothing else
    pool = lg.build_pool(
        setup_dir / "tiny3.yaml", model=f"local-dir:{setup_dir / 'anc'}", out=tmp_path / "api", progress=False
    )
    res = lg.assemble(pool, lg.Selection(size="small"), epochs=1)
    rows = lg.bench(pool, batch_sizes=(1,), out=tmp_path / "api-report").df.to_dict("records")

    assert res.child is not None and (res.child / "config.json").exists()
    assert sorted(p.name for p in (cli_pool / "children").iterdir()) == [res.child.name]
    by = {r["model"]: r for r in cli_rows}
    assert sorted(by) == sorted(r["model"] for r in rows)
    for r in rows:
        c = by[r["model"]]
        assert (r["param_count"], r["flops"]) == (c["param_count"], c["flops"]), r["model"]
        assert r["top1"] == pytest.approx(c["top1"], abs=0.01), r["model"]
        assert r["trained"] == c["trained"], r["model"]
