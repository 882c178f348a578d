"""README.md and the docs pages as a new user runs them: every ```bash block (but the installs
and the test command, which CI itself runs) and every ```python block, README first, then the
docs pages in the site's order (mkdocs.yml), in one fresh folder, so the documentation cannot
drift from the code (a block the README already ran is not run again). Blocks that need what
a reader has and the tests do not (their own folder of images, DeiT-Base weights, GPUs) are
fenced as ```sh and only read."""

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def blocks(text: str) -> list[tuple[str, str]]:
    return [(lang, body) for lang, body in FENCE.findall(text) if lang in ("bash", "python")]


def pages() -> list[Path]:
    """README.md, then every page of the docs site in its nav order (the benchmark results it
    shows are written by benchmarks/, not run)."""
    import yaml

    def walk(nav):
        for item in nav:
            for v in item.values() if isinstance(item, dict) else [item]:
                yield from walk(v) if isinstance(v, list) else [v]

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    return [ROOT / "README.md", *(ROOT / "docs" / p for p in walk(nav) if not p.startswith("results/"))]


def runnable(bash: str) -> str:
    """A bash block without what installs (pip) or tests (pytest): CI does those itself."""
    keep = []
    for line in bash.splitlines():
        parts = [p for p in line.split(" && ") if not re.match(r"\s*(python3? -m )?(pip|pytest)\b", p)]
        if parts:
            keep.append(" && ".join(parts))
    return "\n".join(keep)


def test_blocks_are_found_and_the_installs_left_out():
    assert all(p.is_file() for p in pages()) and len(pages()) > 10
    found = [b for p in pages() for b in blocks(p.read_text())]
    assert sum(lang == "python" for lang, _ in found) >= 2 and sum(lang == "bash" for lang, _ in found) >= 4
    quick = runnable("python3 -m pip install -e . && learngene build-pool && learngene bench")
    assert quick == "learngene build-pool && learngene bench"
    assert runnable("python3 -m pip install -e '.[dev]' && python3 -m pytest -q") == ""


@pytest.mark.slow
def test_every_readme_block_runs_as_written(tmp_path):
    (tmp_path / "pools").mkdir()
    for recipe in (ROOT / "pools").glob("*.yaml"):
        shutil.copy(recipe, tmp_path / "pools")
    done = set()
    for i, (page, lang, body) in enumerate((p, *b) for p in pages() for b in blocks(p.read_text())):
        if body in done:
            continue
        done.add(body)
        if lang == "bash":
            script = runnable(body)
            if not script.strip():
                continue
            cmd = ["bash", "-euo", "pipefail", "-c", script]
        else:
            cmd = [sys.executable, "-c", body]
        server = None
        if "127.0.0.1:8000" in body:  # a client of `learngene serve`: one runs for it, on a free port
            server, port = serve(tmp_path)
            cmd[-1] = body.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        try:
            r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
        finally:
            if server is not None:
                server.send_signal(signal.SIGTERM)
                server.wait(60)
        assert r.returncode == 0, f"{page.name} block {i} ({lang}) failed:\n{body}\n--- stderr:\n{r.stderr[-3000:]}"


def serve(cwd: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen(["learngene", "serve", "pools/embedded", "--port", str(port)], cwd=cwd)
    t = time.monotonic()
    while time.monotonic() - t < 600:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return p, port
        except OSError:
            time.sleep(0.5)
        assert p.poll() is None, "learngene serve exited before it was ready"
    p.kill()
    raise AssertionError("learngene serve was not ready within 600 s")
