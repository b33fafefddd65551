"""fastres.scale.serve through `fastres serve` on a local Ray cluster, over HTTP on 127.0.0.1,
with the default batch wait: every bad request gets its 4xx and the replica goes on; 32
concurrent requests are all answered as torchvision's own model answers them, in batches
larger than one; 16 clients that stall in their bodies get 408 and hold no valid request
up, nor do 16 that stall in their headers; SIGTERM once 16 requests have reached the replica
answers all of them, then takes the application down; SIGINT with requests held in a batch's
wait answers them at once; and after the cluster's shutdown none of its processes is left.
Orders of events come from the server's own state (its /healthz), not from sleeps. drain_app
is also driven without Ray, by a stand-in router. (The replica's limits one by one, without
Ray: test_scale_replica.py.)"""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from predict_helpers import pixels, torchvision_reference
from scale_helpers import CLUSTER, alive, descendants, free_port, is_ray, ray_or_skip, start_serve
from test_build import calibrated
from wait_helpers import wait_until

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision")
REPO = Path(__file__).resolve().parents[1]
RESIZE, CROP, TOPK, MAX_BATCH = 40, 32, 3, 16
BODY_TIMEOUT_S = 4


class Clock:
    """time for drain_app: a clock that moves only when drain_app sleeps."""

    def __init__(self):
        self.now, self.sleeps = 0.0, 0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1


class Router:
    """Serve as drain_app sees it: `get_app_handle(name).drain.remote(s).result(timeout_s)`,
    each call sent to the replica `route` names (by the call's number), which answers (its id,
    batches run, requests it answered 503): `counts[id]` on its first call, `later` after
    (what a replica that forgot its drain said: 0). More than `limit` calls: a spinning loop."""

    def __init__(self, counts: dict[str, int], route, later: int | None = 0, limit: int = 1000):
        self.counts, self.route, self.later, self.limit = counts, route, later, limit
        self.calls: list[str] = []
        self.drain = self

    def get_app_handle(self, name: str):
        return self

    def remote(self, seconds: float):
        assert len(self.calls) < self.limit, f"drain_app spins: {len(self.calls)} calls"
        me = self.route(len(self.calls))
        first = me not in self.calls
        self.calls.append(me)
        answer = (me, 1, self.counts[me] if first or self.later is None else self.later)
        return type("Call", (), {"result": lambda _self, timeout_s: answer})()


def test_drain_app_counts_each_replica_once_from_its_first_answer(monkeypatch):
    """Two replicas; the router sends the first three calls to a: a's second answer (0, from a
    replica that does not remember its drain) does not replace its first (3)."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install 'fastres[ray]'")
    from fastres.scale import serve as serve_mod

    router = Router({"a": 3, "b": 2}, lambda i: "a" if i < 3 else "b")
    monkeypatch.setattr(serve_mod, "serve", router)
    monkeypatch.setattr(serve_mod, "time", Clock())
    assert serve_mod.drain_app(replicas=2, drain_s=5.0) == (2, 5, [])
    assert router.calls == ["a", "a", "a", "b"]


def test_drain_app_pauses_between_rounds_that_find_no_new_replica(monkeypatch):
    """Two replicas asked for, every call routed to the one that is there: drain_app goes on
    until drain_s + 10 s, but in rounds half a second apart, not as fast as the calls return."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install 'fastres[ray]'")
    from fastres.scale import serve as serve_mod

    router, clock = Router({"a": 4}, lambda i: "a", later=None), Clock()
    monkeypatch.setattr(serve_mod, "serve", router)
    monkeypatch.setattr(serve_mod, "time", clock)
    assert serve_mod.drain_app(replicas=2, drain_s=2.0) == (1, 4, [])
    assert clock.now == pytest.approx(12.0) and clock.sleeps == 24 and len(router.calls) == 2 + 24, router.calls


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`fastres serve --address <the test cluster>` in its own process, ready: (process,
    base URL, stderr file, files)."""
    ray_or_skip()
    root = tmp_path_factory.mktemp("serve")
    cluster = CLUSTER.start(tmp_path_factory.getbasetemp())
    model = calibrated("resnet18")
    torch.save(model.state_dict(), root / "r18.pth")
    (root / "labels.txt").write_text("".join(f"class {i}\n" for i in range(10)))
    port = free_port()
    log = root / "serve.log"
    proc = start_serve(["--address", cluster.address, "--port", str(port), "--grpc-port", "0", "--weights", "r18.pth",
                        "--labels", "labels.txt", "--dtype", "float32", "--resize", str(RESIZE), "--crop", str(CROP),
                        "--topk", str(TOPK), "--max-batch", str(MAX_BATCH), "--max-body-mb", "1", "--body-timeout-s",
                        str(BODY_TIMEOUT_S), "--drain-s", "60", "--insecure-no-ray-auth"],
                       root, dict(cluster.env, PYTHONPATH=str(REPO)), log)
    yield proc, f"http://127.0.0.1:{port}", log, model
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def request(url: str, data: bytes | None = None, method: str = "POST") -> tuple[int, dict, dict]:
    """(status, JSON body, headers with lower-case names) of one request."""
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read()), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), {k.lower(): v for k, v in exc.headers.items()}


def encoded(i: int) -> bytes:
    """A small JPEG (even i) or PNG (odd i), each different."""
    buf = io.BytesIO()
    pixels((44 + i, 36 + 2 * i), "RGB", 100 + i).save(buf, "JPEG" if i % 2 == 0 else "PNG")
    return buf.getvalue()


def expected_top(model, body: bytes, tmp: Path) -> list[tuple[int, float]]:
    """torchvision's own answer (its decoder, transforms and model, float32): [(index, prob)]."""
    tmp.write_bytes(body)
    x = torchvision_reference(tmp, RESIZE, CROP)[None]
    with torch.inference_mode():
        probs = torch.softmax(model(x).double(), 1)[0]
    values, indices = probs.topk(TOPK)
    return list(zip(indices.tolist(), values.tolist()))


def test_bad_requests_then_32_concurrent_in_batches(server, ray_cluster, tmp_path):
    proc, base, log, model = server
    status, body, _ = request(base + "/healthz", method="GET")
    assert (status, body) == (200, {"status": "ok", "queued": 0, "running": 0})

    jpeg = encoded(0)
    bad = {
        "empty": (request(base + "/predict", b""), 400, "empty body"),
        "text": (request(base + "/predict", b"hello, not an image\n" * 8), 400, "not an image"),
        "bmp": (request(base + "/predict", b"BM" + b"\0" * 64), 400, "unsupported image format BMP"),
        "truncated": (request(base + "/predict", jpeg[: len(jpeg) // 2]), 400, "cannot decode JPEG"),
        "too large": (request(base + "/predict", jpeg + b"\0" * 1_000_000), 413, "over the limit of 1000000 bytes"),
        "method": (request(base + "/predict", method="GET"), 405, "use POST /predict"),
        "path": (request(base + "/classify", jpeg), 404, "no route POST /classify"),
    }
    for name, ((status, body, headers), want_status, words) in bad.items():
        assert status == want_status and set(body) == {"error"} and words in body["error"], (name, status, body)
    assert bad["method"][0][2]["allow"] == "POST"

    # Then 32 at once (8 different images, 4 times each): every one answered, as torchvision answers.
    bodies = [encoded(i % 8) for i in range(32)]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda b: request(base + "/predict", b), bodies))
    want = [expected_top(model, encoded(i), tmp_path / f"{i}.img") for i in range(8)]
    sizes = []
    for i, (status, body, headers) in enumerate(answers):
        assert status == 200 and set(body) == {"top"}, (i, status, body)
        assert [t["index"] for t in body["top"]] == [w[0] for w in want[i % 8]], i
        assert all(t["label"] == f"class {t['index']}" for t in body["top"])
        assert [t["prob"] for t in body["top"]] == pytest.approx([w[1] for w in want[i % 8]], rel=1e-4)
        sizes.append(int(headers["x-fastres-batch"]))
    assert max(sizes) > 1 and max(sizes) <= MAX_BATCH, sizes
    assert proc.poll() is None and "Traceback" not in log.read_text()


def raw(port: int, data: bytes) -> socket.socket:
    """A connection that has sent `data` and sends nothing more."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(data)
    return sock


def answer(sock: socket.socket) -> tuple[int, bytes]:
    """(status, body) of the response on a raw connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
        if length and len(body) >= length[0]:
            break
    sock.close()
    return int(data.split(b" ", 2)[1]), data.partition(b"\r\n\r\n")[2]


def test_slow_clients_get_408_and_hold_no_one_up(server, ray_cluster):
    proc, base, log, _ = server
    port = int(base.rsplit(":", 1)[1])
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"\x89PNG\r\n"
    t0 = time.monotonic()
    slow = [raw(port, head) for _ in range(16)]
    # And 16 that stall in their headers: they hold a connection in Serve's proxy, no more.
    stalled_headers = [raw(port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Le") for _ in range(16)]
    status, body, _ = request(base + "/predict", encoded(3))
    valid_at = time.monotonic() - t0
    assert status == 200 and set(body) == {"top"}, (status, body)
    answers = [answer(s) for s in slow]
    slow_at = time.monotonic() - t0
    for status, body in answers:
        assert status == 408 and f"did not arrive within {BODY_TIMEOUT_S} s" in json.loads(body)["error"], body
    # Held until the slow bodies' 408s, the valid request would have taken BODY_TIMEOUT_S more
    # than one sent on its own, as the next one is.
    t1 = time.monotonic()
    status, _, _ = request(base + "/predict", encoded(4))
    alone = time.monotonic() - t1
    assert status == 200 and slow_at >= BODY_TIMEOUT_S and valid_at < alone + BODY_TIMEOUT_S / 2, (valid_at, alone)
    for sock in stalled_headers:
        sock.close()
    # A Content-Length uvicorn cannot parse: its own 400, before the request reaches fastres.
    status, body = answer(raw(port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\nab"))
    assert status == 400, body


def in_replica(base: str) -> int:
    """Requests queued or running in the (one) replica, by its /healthz."""
    status, body, _ = request(base + "/healthz", method="GET")
    assert status == 200, (status, body)
    return body["queued"] + body["running"]


def test_sigterm_answers_the_16_requests_in_flight(server, ray_cluster):
    """SIGTERM once the 16 requests are in the replica (on the CPU, the first batch runs for
    seconds meanwhile; where batches take milliseconds, answers may begin first: then at
    once): every one answered. That requests held at the signal are answered whatever the
    engine's speed: the SIGINT test below, which holds them in a batch's wait."""
    proc, base, log, _ = server
    with ThreadPoolExecutor(16) as pool:
        flying = [pool.submit(request, base + "/predict", encoded(i % 8)) for i in range(16)]
        wait_until(lambda: any(f.done() for f in flying) or in_replica(base) == 16, 120,
                   "the 16 requests in the replica")
        proc.send_signal(signal.SIGTERM)
        answers = [f.result() for f in flying]
    assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    assert [status for status, _, _ in answers] == [200] * 16, answers
    text = log.read_text()
    assert "fastres serve: stopping" in text and "fastres serve: drained 1 of 1 replica(s)" in text
    assert "Traceback" not in text
    with pytest.raises(urllib.error.URLError):  # Serve is down with its last application: nothing listens
        urllib.request.urlopen(base + "/healthz", timeout=10)


def test_its_own_cluster_with_token_auth_then_sigint_leaves_nothing(tmp_path):
    """Without --address: a local cluster with Ray's token authentication, its token file
    created 0600; SIGINT with 3 requests held in the replica's queue (a batch of up to 4 that
    waits 10 minutes for its 4th) answers them at once (the drain closes the batch), exits 0,
    and every process of that cluster is gone."""
    ray_or_skip()
    torch.save(calibrated("resnet18").state_dict(), tmp_path / "r18.pth")
    token = tmp_path / "token" / "auth_token"
    env = {k: v for k, v in CLUSTER.env.items() if k != "RAY_AUTH_MODE"}
    env.update(RAY_AUTH_TOKEN_PATH=str(token), PYTHONPATH=str(REPO))
    port, log = free_port(), tmp_path / "serve.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastres", "serve", "--port", str(port), "--grpc-port", "0", "--weights", "r18.pth",
             "--dtype",
             "float32", "--resize", str(RESIZE), "--crop", str(CROP), "--max-batch", "4", "--batch-wait-ms",
             "600000"],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err)
    pids: set[int] = set()
    deadline = time.monotonic() + 240
    while "fastres serve: ready at" not in log.read_text():
        pids |= descendants(proc.pid)
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"fastres serve did not get ready (exit {proc.poll()}):\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    try:
        assert token.stat().st_mode & 0o777 == 0o600 and token.parent.stat().st_mode & 0o777 == 0o700
        assert f"Ray token authentication on; its token is in {token} (mode 600)" in log.read_text()
        base = f"http://127.0.0.1:{port}"
        with ThreadPoolExecutor(3) as pool:
            flying = [pool.submit(request, base + "/predict", encoded(i)) for i in range(3)]
            wait_until(lambda: in_replica(base) == 3, 120, "3 requests queued in the replica")
            pids |= descendants(proc.pid)
            assert len(pids) >= 3 and not any(f.done() for f in flying), pids
            t0 = time.monotonic()
            proc.send_signal(signal.SIGINT)
            answers = [f.result() for f in flying]
            answered_in = time.monotonic() - t0
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [status for status, _, _ in answers] == [200] * 3, answers
    assert [int(h["x-fastres-batch"]) for _, _, h in answers] == [3] * 3 and answered_in < 300, answered_in
    end = time.monotonic() + 20
    while time.monotonic() < end and any(alive(p) for p in pids):
        time.sleep(0.2)
    left = sorted(p for p in pids if alive(p))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"still alive after fastres serve exited: {left}"
    assert "Traceback" not in log.read_text()


def test_shutdown_leaves_no_ray_process(ray_cluster):
    """Every process the cluster started (GCS, raylet, workers, Serve's controller, proxy and
    replica, the Data actors), by PID: none alive after ray.shutdown()."""
    pids = set(ray_cluster.pids) | {p for p in descendants(os.getpid()) if is_ray(p)}
    assert len(pids) >= 3, pids  # at least GCS, raylet and a worker: the check has something to check
    left = ray_cluster.stop()
    assert left == [], f"still alive after ray.shutdown(): {left}"
