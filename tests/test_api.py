"""The public Python API is the CLI: the main job (build-pool, assemble --size, bench) run
through ``import learngene as lg`` alone gives the same members, params and accuracies as the
same job through the CLI on the same inputs; every verb documents its arguments."""

import dataclasses
import inspect
import json

import pytest
from helpers import cli, fresh_pool

import learngene as lg

VERBS = ("build_pool", "assemble", "bench", "target", "export", "kit", "grow", "adapt", "ancestor", "resolve")
# the verbs with a typed request (resolve returns a reference, it runs nothing)
REQUESTS = ("build_pool", "assemble", "bench", "target", "export", "kit", "grow", "adapt", "ancestor", "serve")


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_is_one_documented_call(verb):
    doc = getattr(lg, verb).__doc__ or ""
    assert "Args:" in doc, f"lg.{verb} has no Args: section"
    assert callable(lg.adapt.apply) and callable(lg.adapt.ls)


@pytest.mark.parametrize("verb", REQUESTS)
def test_every_verb_takes_one_frozen_request_whose_fields_are_its_signature(verb):
    from learngene.api._common import Request

    fn = getattr(lg, verb)
    req = fn.Request
    assert issubclass(req, Request) and req.__dataclass_params__.frozen
    fields = [f.name for f in dataclasses.fields(req) if f.init]
    assert [p for p in inspect.signature(fn).parameters if p != "settings"] == fields


def test_a_request_is_checked_in_one_place_before_any_work(tmp_path):
    """Bounds are refused when the request is built (no pool is opened: the folder does not
    exist), and a built request cannot be changed afterwards."""
    from learngene.core.errors import UserError

    missing = tmp_path / "no-pool"
    for make, flag in [
        (lambda: lg.serve.Request(missing, port=0), "--port"),
        (lambda: lg.serve.Request(missing, max_batch_size=10_000), "--max-batch-size"),
        (lambda: lg.bench.Request(missing, batch_sizes=(0,)), "batch"),
        (lambda: lg.bench.Request(missing, include=("nope",)), "--include"),
        (lambda: lg.export.Request("embedded", out=tmp_path / "x", fmt="pt2", precision="int8"), "--precision"),
        (lambda: lg.grow.Request("embedded", method="net2net", out=tmp_path / "g", steps=-1), "--steps"),
        (lambda: lg.ancestor.Request(fine_tune=True), "--fine-tune"),
        (lambda: lg.assemble.Request.build(missing, epochs=-1), "epochs"),
    ]:
        with pytest.raises(UserError, match=flag):
            make()
    assert not missing.exists()
    r = lg.serve.Request(missing, port=8123)
    assert r.runtime == "onnxruntime"  # auto: the faster at one image a request, installed here
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.port = 1
    assert r.to_dict()["port"] == 8123 and "token" not in r.to_dict()


def test_the_main_job_through_the_api_equals_the_cli(setup_dir, tmp_path):
    # the CLI: the shared test pool was built by `learngene build-pool` (in-process) from this
    # recipe and ancestor; a copy of it goes on through assemble and bench (this tiny ancestor
    # has no "tiny" member: DeiT-Ti/DeiT-B of 53k params is 3.5k)
    cli_pool = fresh_pool(setup_dir, tmp_path / "cli")
    for argv in (
        ("assemble", "--pool", cli_pool, "--size", "small", "--epochs", "1"),
        ("bench", "--pool", cli_pool, "--batch-sizes", "1", "--min-run-time", "0.01", "--out", tmp_path / "cli-report"),
    ):
        r = cli(*argv, "-q")
        assert r.returncode == 0, r.stderr[-2000:]
    cli_rows = json.loads((tmp_path / "cli-report" / "frontier.json").read_text())["rows"]

    # the API, nothing else
    pool = lg.build_pool(
        setup_dir / "tiny3.yaml", model=f"local-dir:{setup_dir / 'anc'}", out=tmp_path / "api", progress=False
    )
    res = lg.assemble(pool, lg.Selection(size="small"), epochs=1)
    rows = lg.bench(pool, batch_sizes=(1,), min_run_time=0.01, out=tmp_path / "api-report").df.to_dict("records")

    assert res.child is not None and (res.child / "config.json").exists()
    assert sorted(p.name for p in (cli_pool / "children").iterdir()) == [res.child.name]
    by = {r["model"]: r for r in cli_rows}
    assert sorted(by) == sorted(r["model"] for r in rows)
    for r in rows:
        c = by[r["model"]]
        assert (r["param_count"], r["flops"]) == (c["param_count"], c["flops"]), r["model"]
        assert r["top1"] == pytest.approx(c["top1"], abs=0.01), r["model"]
        assert r["trained"] == c["trained"], r["model"]
