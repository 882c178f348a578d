"""What many test modules use: the CLI in a fresh process and in this one, the one-line error
check, tiny recipes and ancestors, image folders. Test modules import from here, never from
each other; the fixtures built on these live in conftest.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys

import torch

# The tiny recipe: narrow 16 / wide 32, two blocks each, 3 distillation steps (plumbing only).
RECIPE = {
    "name": "tiny",
    "auxiliary": {
        "narrow": {"embed_dim": 16, "num_heads": 2, "depth": 2, "positions": "front,end", "epochs": 1, "lr": 1e-3},
        "wide": {"embed_dim": 32, "num_heads": 2, "depth": 2, "positions": "end", "epochs": 1, "lr": 1e-3},
    },
    "distill": {"batch_size": 32, "max_steps": 3},
}
# the same one block deeper: 9 descendants (the shared test pool's recipe)
RECIPE3 = json.loads(json.dumps(RECIPE))
RECIPE3["name"] = "tiny3"
for _aux in RECIPE3["auxiliary"].values():
    _aux["depth"] = 3
RECIPE3["distill"] = {"batch_size": 64, "max_steps": 4}

TINY_ANCESTOR_ARGS = dict(img_size=16, patch_size=4, embed_dim=32, depth=4, num_heads=2, num_classes=10)


def learngene(*args, home=None, timeout=300):
    """The CLI as a user runs it: a fresh process (for signals, kills, DDP, serving, start-up)."""
    env = dict(os.environ)
    if home:
        env["LEARNGENE_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "learngene.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def cli(*args, home=None):
    """The CLI in this process: `learngene.cli.main` with the same parser, verbs and API as a
    fresh process, without the interpreter start-up (torch, timm and Lightning imports: ~7 s a
    call). Exit codes and stdout / stderr as a process gives them."""
    from learngene.cli import main

    out, err = io.StringIO(), io.StringIO()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    old_home = os.environ.get("LEARNGENE_HOME")
    threads = torch.get_num_threads()
    if home:
        os.environ["LEARNGENE_HOME"] = str(home)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(a) for a in args])
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        torch.set_num_threads(threads)  # a verb's --threads is its own, not the next test's
        if home:
            if old_home is None:
                os.environ.pop("LEARNGENE_HOME", None)
            else:
                os.environ["LEARNGENE_HOME"] = old_home
    return subprocess.CompletedProcess(["learngene", *map(str, args)], code, out.getvalue(), err.getvalue())


def assert_one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def quiet():
    """Trainer arguments for tests: no bar, the CPU."""
    from learngene.core.training import TrainerArgs

    return TrainerArgs(progress=False, accelerator="cpu")


def save_tiny_ancestor(folder, seed: int = 0, model=None, **config):
    """A tiny DeiT-architecture ancestor for the digits (``model``, of TINY_ANCESTOR_ARGS, or
    one at random init from ``seed``), as a timm local-dir; ``config`` replaces entries of its
    data config (``label_names=...``, ``mean=...``)."""
    import timm

    from learngene.core.data import digits_data_config
    from learngene.core.localdir import save_local_dir

    if model is None:
        torch.manual_seed(seed)
        model = timm.create_model("deit_tiny_patch16_224", **TINY_ANCESTOR_ARGS)
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in digits_data_config().items()}
    cfg = {**cfg, "num_classes": 10, **config}
    return save_local_dir(model, folder, "deit_tiny_patch16_224", TINY_ANCESTOR_ARGS, cfg)


def adapt_args(model, pool, name="rot", epochs=1, fraction=0.2) -> tuple:
    """``learngene adapt`` of ``model`` to the rotated digits, quick and quiet (no --name when
    ``name`` is None)."""
    named = ("--name", name) if name else ()
    return ("adapt", "--model", model, "--pool", pool, "--data", "digits:rot90", *named, "--epochs", str(epochs),
            "--fraction", str(fraction), "-q", "--accelerator", "cpu")  # fmt: skip


def copy_of(pool, tmp_path):
    """A private copy of a pool in tmp_path, for a test that writes to it."""
    return shutil.copytree(pool, tmp_path / "pool")


def fresh_pool(setup_dir, tmp_path):
    """A private copy of the shared test pool."""
    return copy_of(setup_dir / "pool", tmp_path)


def make_image_folder(root, classes=("cat", "dog"), per_class=12, size=20, seed=0):
    """Real PNG files on disk in ROOT/<class>/<i>.png."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        d = root / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"{i}.png")
    return root


def start(*args, **kw):
    """The CLI in a background process (to signal or kill it mid-run)."""
    env = {**os.environ, **kw.pop("env", {})}
    return subprocess.Popen(
        [sys.executable, "-m", "learngene.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


def wait_for(cond, timeout=120.0, proc=None):
    import time

    t = time.monotonic()
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} first: {proc.stderr.read()[-2000:]}")
        if time.monotonic() - t > timeout:
            raise AssertionError("timed out")
        time.sleep(0.02)


def write(tmp_path, obj, name="lat.json"):
    """A JSON (or text) file in tmp_path, as a device or a user would hand it over."""
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p
