"""Failure modes through the CLI: signals, two writers at once, crafted recipes and manifests,
non-finite weights, permissions, leftovers of killed runs, and the exit-code contract."""

import errno
import json
import os
import shutil
import signal
import stat

import pytest
import torch
import yaml
from helpers import RECIPE3 as TINY3
from helpers import adapt_args, assert_one_line_error, cli, fresh_pool, save_tiny_ancestor, start, wait_for


def tree(folder):
    """What a folder holds, but the pool's lock file (.lock: how writers take turns, kept)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != ".lock") if folder.exists() else []


def build_args(recipe, setup_dir, out) -> tuple:
    """build-pool of ``recipe`` from the test pool's ancestor, on the CPU."""
    return (
        "build-pool",
        "--recipe",
        recipe,
        "--ancestor",
        f"local-dir:{setup_dir / 'anc'}",
        "--out",
        out,
        "--accelerator",
        "cpu",
    )


def slow_recipe(tmp_path, wide_epochs=40):
    r = json.loads(json.dumps(TINY3))
    r["name"] = "slow"
    r["auxiliary"]["narrow"]["epochs"] = 1
    r["auxiliary"]["wide"]["epochs"] = wide_epochs
    r["distill"] = {"batch_size": 64}
    (tmp_path / "slow.yaml").write_text(yaml.safe_dump(r))
    return tmp_path / "slow.yaml"


def test_sigterm_during_build_pool_exits_143_and_resume_finishes(setup_dir, tmp_path):
    recipe, out = slow_recipe(tmp_path, wide_epochs=6), tmp_path / "pool"
    args = build_args(recipe, setup_dir, out)
    p = start(*args)
    # mid-training of the second auxiliary model: its first checkpoint is on disk
    wait_for(lambda: (tmp_path / ".pool.partial" / "checkpoints" / "wide" / "last.ckpt").exists(), proc=p)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == "learngene: interrupted"
    assert not out.exists() and (tmp_path / ".pool.partial" / "narrow.done.json").is_file()  # nothing under a real name
    r = cli(*args, "--resume", "-q")  # the resume need not be a process of its own
    assert r.returncode == 0, r.stderr[-2000:]
    assert cli("pool", "verify", out).returncode == 0 and not (tmp_path / ".pool.partial").exists()


def test_sigint_during_assemble_exits_130_and_writes_nothing(setup_dir, tmp_path):
    pool = fresh_pool(setup_dir, tmp_path)
    before = tree(pool)
    p = start("assemble", "--pool", pool, "--all", "--epochs", "200", "--descendant", "1,2", "--accelerator", "cpu")
    lines = []
    wait_for(lambda: lines.append(p.stderr.readline()) or "assemble: epoch 1/200" in lines[-1], proc=p)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "learngene: interrupted"
    assert tree(pool) == before  # no revision, no child, no staging folder
    assert cli("pool", "verify", pool).returncode == 0  # and what was there is intact


def test_a_log_gets_a_line_per_epoch(setup_dir, tmp_path):
    recipe = slow_recipe(tmp_path, wide_epochs=2)
    r = cli(*build_args(recipe, setup_dir, tmp_path / "p"))
    assert r.returncode == 0, r.stderr[-2000:]
    epochs = [line for line in r.stderr.splitlines() if ": epoch " in line]
    assert [line.split(":")[0] for line in epochs] == ["build-pool narrow", "build-pool wide", "build-pool wide"]
    assert "━" not in r.stderr  # no progress bar drawn into a log


def test_a_second_builder_of_the_same_pool_is_refused_at_once(setup_dir, tmp_path):
    recipe, out = slow_recipe(tmp_path, wide_epochs=1000), tmp_path / "pool"
    args = build_args(recipe, setup_dir, out)
    p = start(*args)
    wait_for(lambda: (tmp_path / ".pool.partial" / "build.json").exists(), proc=p)
    for extra in ((), ("--force",), ("--resume",)):
        # the second builder in this process: the lock is the other process's either way
        assert_one_line_error(cli(*args, *extra), "being written by another learngene process")
    assert (tmp_path / ".pool.partial" / "build.json").exists()  # the running build's stage was left alone
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=120)


def test_two_adapts_at_once(tmp_path, tiny_vit):
    pytest.importorskip("peft")
    save_tiny_ancestor(tmp_path / "base", model=tiny_vit)
    common = adapt_args(tmp_path / "base", tmp_path / "pool", name=None, epochs=2)
    runs = [start(*common, "--name", n) for n in ("a", "b")]
    # a second "a" while those two run, in this process (a writer all the same: the lock is per
    # open file, so this one and the process "a" exclude each other)
    here = cli(*common, "--name", "a")
    codes = [(here.returncode, here.stderr.strip().splitlines()[-1] if here.stderr.strip() else "")]
    for p in runs:
        _, err = p.communicate(timeout=600)
        codes.append((p.returncode, err.strip().splitlines()[-1] if err.strip() else ""))
    assert codes[2][0] == 0, codes  # b
    a1, a2 = sorted((codes[0], codes[1]))  # one "a" wins, the other is refused in one line
    assert a1[0] == 0 and a2[0] == 2 and ("being written by another" in a2[1] or "delta exists" in a2[1]), codes
    assert sorted(p.name for p in (tmp_path / "pool" / "adapters").iterdir() if not p.name.startswith(".")) == [
        "a",
        "b",
    ]


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda r: r["auxiliary"].update({"../../victim": r["auxiliary"].pop("wide")}), "auxiliary model name"),
        (lambda r: r.update(name="../escape"), "recipe name"),
        (lambda r: r["auxiliary"]["narrow"].update(mlp_ratio=-2.0), "mlp_ratio"),
        (lambda r: r["auxiliary"]["narrow"].update(depth="three"), "integer"),
        (lambda r: r.update(distill=5), "distill"),
    ],
)
def test_crafted_recipes_are_refused_and_write_nothing(setup_dir, tmp_path, change, needle):
    r = json.loads(json.dumps(TINY3))
    change(r)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
    out = tmp_path / "pools" / "p"
    assert_one_line_error(
        cli(
            "build-pool", "--recipe", tmp_path / "r.yaml", "--ancestor", f"local-dir:{setup_dir / 'anc'}", "--out", out
        ),
        needle,
    )
    assert tree(tmp_path) == ["r.yaml"]


def test_set_values_that_are_not_yaml_or_of_the_wrong_type(setup_dir, tmp_path):
    base = ("build-pool", "--recipe", "embedded", "--out", tmp_path / "p")
    for setting, needle in (
        ("distill.alpha=[1", "not valid YAML"),
        ("distill.batch_size=abc", "integer"),
        ("auxiliary.narrow.lr=-1", "lr"),
        ("auxiliary=5", "auxiliary"),
    ):
        assert_one_line_error(cli(*base, "--set", setting), needle)
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob(".p*"))


def edit_manifest(pool, fn):
    m = json.loads((pool / "pool.json").read_text())
    m = fn(m) or m
    (pool / "pool.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda m: m["instances"][0].update(file="../outside.safetensors"), "not a file of instances/"),
        (lambda m: m["instances"][0].update(file="/etc/passwd"), "not a file of instances/"),
        (lambda m: m["instances"][0].update(id="../x"), "not a plain name"),
        (lambda m: m["auxiliary"]["narrow"]["model_args"].update(pretrained=True), "pretrained"),
        (
            lambda m: m["auxiliary"]["narrow"]["model_args"].update(pretrained_cfg_overlay={"file": "/etc/x"}),
            "pretrained_cfg_overlay",
        ),
        (lambda m: m.update(version="1"), "version"),
        (lambda m: [1, 2], "not an object"),
        (lambda m: m.pop("auxiliary") and None, "auxiliary"),
    ],
)
def test_crafted_manifests_are_refused_in_one_line(setup_dir, tmp_path, change, needle):
    pool = fresh_pool(setup_dir, tmp_path)
    edit_manifest(pool, change)
    for verb in (("pool", "info", pool), ("assemble", "--pool", pool, "--size", "tiny"), ("bench", "--pool", pool)):
        assert_one_line_error(cli(*verb), needle)


def test_revision_cycles_symlinks_and_escaping_files(setup_dir, tmp_path):
    pool = fresh_pool(setup_dir, tmp_path)
    assert cli("assemble", "--pool", pool, "--all", "--epochs", "0", "-q", "--accelerator", "cpu").returncode == 0
    saved = (pool / "pool.json").read_text()
    edit_manifest(pool, lambda m: m["revisions"][0].update(parent="r1"))  # its own parent
    assert_one_line_error(cli("assemble", "--pool", pool, "--list"), "parent", "r1")
    (pool / "pool.json").write_text(saved)
    # a file of the pool replaced by a symlink to a file outside it is not read
    (tmp_path / "outside.safetensors").write_bytes((pool / "instances" / "narrow.b0.safetensors").read_bytes())
    (pool / "instances" / "narrow.b0.safetensors").unlink()
    os.symlink(tmp_path / "outside.safetensors", pool / "instances" / "narrow.b0.safetensors")
    assert_one_line_error(cli("pool", "verify", pool), "narrow.b0.safetensors")
    shutil.copy(tmp_path / "outside.safetensors", tmp_path / "keep.safetensors")
    (pool / "instances" / "narrow.b0.safetensors").unlink()
    shutil.copy(tmp_path / "keep.safetensors", pool / "instances" / "narrow.b0.safetensors")
    # a symlinked children/ would redirect the export elsewhere: refused
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", pool / "children")
    assert_one_line_error(cli("assemble", "--pool", pool, "--descendant", "narrow", "--no-program"), "symlink")
    assert not any((tmp_path / "elsewhere").iterdir())


def test_non_finite_weights_stop_the_run_and_pool_verify_finds_them(setup_dir, tmp_path, tiny_vit):
    from safetensors.torch import load_file, save_file

    from learngene.core.io import file_sha256

    bad = {k: v.clone() for k, v in tiny_vit.state_dict().items()}
    bad["blocks.1.attn.qkv.weight"][0, 0] = float("nan")
    torch.save(bad, tmp_path / "nan.pth")
    anc = save_tiny_ancestor(tmp_path / "anc", model=tiny_vit)
    save_file({k: v.contiguous() for k, v in bad.items()}, str(anc / "model.safetensors"))
    r = cli(
        "build-pool", "--recipe", setup_dir / "tiny3.yaml", "--ancestor", f"local-dir:{anc}", "--out", tmp_path / "p"
    )
    assert_one_line_error(r, "non-finite", "blocks.1.attn.qkv.weight")
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob(".p*"))
    # a pool whose file holds NaN (and a manifest checksum to match it): pool verify says so
    pool = fresh_pool(setup_dir, tmp_path)
    f = pool / "instances" / "wide.b0.safetensors"
    t = load_file(str(f))
    next(iter(t.values())).view(-1)[0] = float("inf")
    save_file(t, str(f))
    edit_manifest(pool, lambda m: next(e for e in m["instances"] if e["id"] == "wide.b0").update(sha256=file_sha256(f)))
    assert_one_line_error(cli("pool", "verify", pool), "non-finite", "wide.b0.safetensors")


def test_outputs_follow_the_umask(setup_dir, tmp_path):
    pool = fresh_pool(setup_dir, tmp_path)
    old = os.umask(0o022)
    try:
        r = cli("assemble", "--pool", pool, "--descendant", "1,2", "--epochs", "0", "-q", "--accelerator", "cpu")
        assert r.returncode == 0, r.stderr
    finally:
        os.umask(old)
    for p in [
        pool / "children" / "stitch-1-2",
        *(pool / "children" / "stitch-1-2").iterdir(),
        pool / "revisions" / "r1",
        *(pool / "revisions" / "r1").rglob("*"),
    ]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o755 if p.is_dir() else 0o644), (p, oct(mode))


def test_leftovers_are_ignored_reported_and_cleaned(setup_dir, tmp_path):
    pool = fresh_pool(setup_dir, tmp_path)
    rep = cli("bench", "--pool", pool, "--batch-sizes", "1", "--min-run-time", "0.01", "--json")
    assert rep.returncode == 0, rep.stderr
    real = next(p for p in (pool / "reports").iterdir())
    # a killed bench's staging folder holding a report that would win (newer, every latency tiny)
    killed = pool / "reports" / ".cpu-x.partial"
    shutil.copytree(real, killed)
    doc = json.loads((killed / "frontier.json").read_text())
    doc["meta"]["created"] = "99999999T999999"
    for row in doc["rows"]:
        row["infer_step_time_p90"] = row["infer_step_time"] = 1e-9
    (killed / "frontier.json").write_text(json.dumps(doc))
    (pool / ".pool.json.tmp-123").write_text("{}")
    (pool / "revisions").mkdir()
    (pool / "revisions" / "r7").mkdir()
    r = cli("target", "--pool", pool, "--max-latency-ms", 1e-6)
    assert_one_line_error(r, "closest")  # the real report was read: nothing fits this budget there
    r = cli("pool", "verify", pool)
    assert r.returncode == 0 and ".cpu-x.partial" in r.stdout and "r7" in r.stdout and ".pool.json.tmp-123" in r.stdout
    r = cli("pool", "verify", pool, "--clean")
    assert r.returncode == 0 and "removed" in r.stdout
    assert not killed.exists() and not (pool / "revisions" / "r7").exists() and real.exists()


def test_force_says_what_it_deletes(setup_dir, tmp_path):
    pool = fresh_pool(setup_dir, tmp_path)
    assert (
        cli("assemble", "--pool", pool, "--descendant", "narrow", "--epochs", "0", "-q", "--no-program").returncode == 0
    )
    r = cli(*build_args(setup_dir / "tiny3.yaml", setup_dir, pool), "--force", "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--force replaces pool" in r.stderr and "1 revision, 1 child go with it" in r.stderr


def test_write_failures_are_exit_2_one_line(setup_dir, tmp_path, monkeypatch):
    import learngene.core.io as io

    pool = fresh_pool(setup_dir, tmp_path)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(io, "publish", full)  # what a full disk does to the first write
    r = cli("assemble", "--pool", pool, "--descendant", "narrow", "--epochs", "0", "-q", "--no-program")
    assert_one_line_error(r, "cannot write", "No space left on device")
    monkeypatch.undo()
    assert not (pool / "children").exists() or not any((pool / "children").iterdir())


def test_small_contracts(setup_dir, tmp_path):
    pool = fresh_pool(setup_dir, tmp_path)
    r = cli("assemble", "--pool", pool, "--all", "--epochs", "0", "-q", "--json", "--accelerator", "cpu")
    assert r.returncode == 0 and json.loads((pool / "pool.json").read_text())["revisions"][0]["trained"] == []
    assert_one_line_error(
        cli("adapt", "--model", "embedded", "--pool", pool, "--name", "x\n", "--data", "digits:rot90"), "--name"
    )
    delta = tmp_path / "delta"
    delta.mkdir()
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        (delta / f).write_text("{}")
    (delta / "learngene.json").write_text(json.dumps({"r": 8}))
    assert_one_line_error(cli("adapt", "apply", "--model", "embedded", "--delta", delta), "lacks")
