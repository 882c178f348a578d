"""`learngene serve --engine ray` on a local Ray instance (started and stopped by the server,
loopback only): two replicas answer every member as it answers alone, with the unmodified
tritonclient; a replica killed mid-load is replaced and loses no request beyond those in flight;
SIGTERM drains and exits 143, leaving no Ray process behind. Slow: Ray's start is ~30 s here."""

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from helpers import cli, fresh_pool
from test_serve import free_port, get, post, start_server

pytest.importorskip("ray.serve")
httpclient = pytest.importorskip("tritonclient.http")
psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.slow
CONCURRENCY = 4


@pytest.fixture(scope="module")
def ray_served(setup_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("serve_ray")
    pool = fresh_pool(setup_dir, d)
    r = cli("assemble", "--pool", pool, "--all", "--epochs", "1", "-q", "--accelerator", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    (d / "token").write_text("ray-token\n")
    port = free_port()
    flags = ["--engine", "ray", "--replicas", "2", "--threads", "1", "--runtime", "torch"]
    p, base = start_server(pool, port, d, flags + ["--token-file", str(d / "token")], limit_s=300)
    yield {"pool": pool, "port": port, "base": base, "proc": p, "token": "ray-token", "log": d / "serve.log"}
    if p.poll() is None:
        p.kill()
        p.wait()


def infer_body(x: np.ndarray) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    ).encode()


def test_two_replicas_answer_every_member_as_it_answers_alone(ray_served):
    import learngene as lg

    client = httpclient.InferenceServerClient(f"127.0.0.1:{ray_served['port']}")
    auth = {"Authorization": f"Bearer {ray_served['token']}"}
    assert client.is_server_live() and client.is_server_ready()
    index = client.get_model_repository_index(headers=dict(auth))
    names = [m["name"] for m in index]
    assert names[0] == ray_served["pool"].name and len(names) == 1 + 9
    assert client.get_model_config(names[1], headers=dict(auth))["name"] == names[1]
    x = torch.randn(2, 3, 16, 16)
    replicas = set()
    for member in names[1:]:
        ref = lg.resolve(f"{ray_served['pool']}:{member}").load().model.eval()
        with torch.inference_mode():
            want = ref(x).numpy()
        for _ in range(3):  # the router spreads them: both replicas answer some
            inp = httpclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x.numpy(), binary_data=True)
            res = client.infer(member, [inp], headers=dict(auth))
            params = res.get_response()["parameters"]
            assert params["member"] == member
            replicas.add(params["replica"])
            assert np.abs(res.as_numpy("logits") - want).max() <= 1e-4, member
    assert len(replicas) == 2, replicas
    assert get(f"{ray_served['base']}/v2/models")[0] == 401  # the token holds on every replica


def test_a_replica_killed_under_load_is_replaced_losing_only_what_it_held(ray_served):
    base, token = ray_served["base"], ray_served["token"]
    url = f"{base}/v2/models/{ray_served['pool'].name}/infer"
    body = infer_body(np.zeros((1, 3, 16, 16), np.float32))
    seen, failed, codes = [], [], []
    lock = threading.Lock()
    stop_at = time.monotonic() + 120  # bounded: the loop stops by itself

    def client(n):
        for _ in range(n):
            if time.monotonic() > stop_at:
                return
            status, text = post(url, body, token)
            with lock:
                codes.append(status)
                if status == 200:
                    seen.append((time.monotonic(), json.loads(text)["parameters"]["replica"]))
                elif status != 503:  # 503 + Retry-After is the designed refusal, not a loss
                    failed.append((status, text[:200]))

    threads = [threading.Thread(target=client, args=(60,)) for _ in range(CONCURRENCY)]
    for t in threads:
        t.start()
    while len(seen) < 20:
        assert time.monotonic() < stop_at and any(t.is_alive() for t in threads)
        time.sleep(0.05)
    victim = seen[-1][1]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    for t in threads:
        t.join()
    assert len(failed) <= CONCURRENCY, failed  # at most the requests it held when it died
    after = {r for t, r in seen if t > killed_at + 1.0}  # answers already on their way may land just after
    assert victim not in after and after, (victim, after)
    # Ray Serve starts a replacement: two replicas answer again, one of them new
    deadline = time.monotonic() + 120
    fresh = set()
    while time.monotonic() < deadline and not (fresh - {victim} - {r for _, r in seen}):
        status, text = post(url, body, token)
        if status == 200:
            fresh.add(json.loads(text)["parameters"]["replica"])
        time.sleep(0.1)
    assert fresh - {victim} - {r for _, r in seen}, "no replacement replica answered in 120 s"


def test_sigterm_drains_exits_143_and_leaves_no_ray_process(ray_served):
    # last in the module: it stops the server the tests above share
    p = ray_served["proc"]
    children = psutil.Process(p.pid).children(recursive=True)
    assert children  # Ray's own processes (GCS, raylet, the replicas), started by the server
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)
    assert p.returncode == 143, ray_served["log"].read_text()[-2000:]
    assert ray_served["log"].read_text().strip().splitlines()[-1] == "learngene: interrupted"
    assert get(f"{ray_served['base']}/v2/health/live")[0] is None  # nothing listens any more
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [c.pid for c in alive]
