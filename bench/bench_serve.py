"""Closed-loop load against a running `fastres serve`: C clients, each sending its next
request as soon as the last is answered, until N requests are answered per level.

    fastres serve --weights r18.pth --resize 40 --crop 32 &        # default flags
    python bench/bench_serve.py --url http://127.0.0.1:8000 --concurrency 1,8,32 --requests 60

Per level it prints: answers by status, requests unanswered (no response within
--timeout), the batch sizes the server reported (``x-fastres-batch``), their mean, the
throughput and the latency's median and 99th percentile. Not a pytest file: it needs a server.
"""
from __future__ import annotations

import argparse
import collections
import io
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request


def image(path: str | None) -> bytes:
    if path:
        with open(path, "rb") as f:
            return f.read()
    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((64, 48), 64).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


def one(url: str, body: bytes, timeout: float) -> tuple[int | None, int | None]:
    """(status, batch size) of one request; (None, None) when no response came."""
    req = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return resp.status, int(resp.headers.get("x-fastres-batch", 0)) or None
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code, None
    except OSError:
        return None, None


def level(url: str, body: bytes, clients: int, requests: int, timeout: float) -> dict:
    lock = threading.Lock()
    statuses: collections.Counter = collections.Counter()
    sizes: list[int] = []
    latencies: list[float] = []
    left = [requests]

    def client():
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            t0 = time.perf_counter()
            status, size = one(url, body, timeout)
            with lock:
                statuses[status if status is not None else "no answer"] += 1
                latencies.append(time.perf_counter() - t0)
                if size:
                    sizes.append(size)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    return {"clients": clients, "requests": requests, "statuses": dict(statuses),
            "unanswered": statuses["no answer"], "batch_sizes": dict(sorted(collections.Counter(sizes).items())),
            "mean_batch": statistics.fmean(sizes) if sizes else 0.0, "req_per_s": requests / wall,
            "p50_s": latencies[len(latencies) // 2], "p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--concurrency", default="1,8,32", help="client counts, one level each (default 1,8,32)")
    p.add_argument("--requests", type=int, default=60, help="requests per level (default 60)")
    p.add_argument("--image", default=None, help="the file to send (default: a 64x48 noise JPEG)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a client waits for an answer (default 120)")
    args = p.parse_args(argv)
    body = image(args.image)
    url = args.url.rstrip("/") + "/predict"
    base = None
    for clients in (int(c) for c in args.concurrency.split(",")):
        r = level(url, body, clients, args.requests, args.timeout)
        base = base or r["req_per_s"]
        print(f"concurrency {clients:3d}: {r['requests']} requests, statuses {r['statuses']}, unanswered "
              f"{r['unanswered']}; batches {r['batch_sizes']} (mean {r['mean_batch']:.2f}); {r['req_per_s']:.2f} "
              f"req/s ({r['req_per_s'] / base:.1f}x the first level); latency p50 {r['p50_s']:.2f} s, "
              f"p99 {r['p99_s']:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
