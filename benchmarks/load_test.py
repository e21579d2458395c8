"""Load test of `sentiment-lab serve`: N concurrent clients for T seconds against a server on loopback.

Starts the server itself (its own process, 127.0.0.1, a free port), so the target is always this machine.
Each client sends one request at a time (IMDb test reviews, cycled) until the time or the request budget is
spent. Prints requests/s, reviews/s, client-side latency p50/p95/p99, errors by status, the server's mean
micro-batch size (from /metrics) and its resident memory: idle after loading, and the peak sampled under load.
--offline also times Predictor.predict on the same reviews in this process, the ceiling that batching approaches.

    python benchmarks/load_test.py runs/quickstart --clients 16 --duration 20
    python benchmarks/load_test.py MODEL_DIR --clients 64 --max-queue 32   # overload: expect 503s, not growth
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
MAX_CLIENTS = 512
MAX_DURATION_S = 600
SERVE = "import sys; from sentiment_lab.cli import main; sys.exit(main(sys.argv[1:]))"


def proc_status_mb(pid: int, field: str) -> float:
    """A memory field of /proc/PID/status (VmRSS: resident now, VmHWM: peak resident) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


class RssSampler(threading.Thread):
    """Samples a process's resident memory every `every_s` seconds: `peak_mb` and the (seconds, MiB) series."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s, self.peak_mb = pid, every_s, 0.0
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        start = time.perf_counter()
        while not self.stop.is_set():
            try:
                rss = proc_status_mb(self.pid, "VmRSS")
            except (OSError, RuntimeError):
                return  # the server exited
            self.peak_mb = max(self.peak_mb, rss)
            self.samples.append((time.perf_counter() - start, rss))
            self.stop.wait(self.every_s)

    def growth(self, window_s: float = 10.0) -> dict[str, float] | None:
        """Mean RSS of the first and the last `window_s` seconds and their ratio (None for a short run)."""
        if not self.samples or self.samples[-1][0] < 2 * window_s:
            return None
        end = self.samples[-1][0]
        first = [mb for t, mb in self.samples if t <= window_s]
        last = [mb for t, mb in self.samples if t >= end - window_s]
        first_mb, last_mb = float(np.mean(first)), float(np.mean(last))
        return {"first_mb": first_mb, "last_mb": last_mb, "growth": last_mb / first_mb - 1}


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str, list[str]]:
    """`sentiment-lab serve` on 127.0.0.1 and a free port; (process, base URL, its log lines)."""
    cmd = [sys.executable, "-c", SERVE, "serve", args.model, "--host", "127.0.0.1", "--port", "0"]
    cmd += ["--backend", args.backend, "--log-level", "warning", "--no-explain"]
    cmd += ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)]
    cmd += ["--max-queue", str(args.max_queue), "--batch-size", str(args.batch_size)]
    if args.int8:
        cmd.append("--int8")
    env = {**os.environ, "SENTIMENT_LAB_API_KEY": ""}  # an inherited key would make every request a 401
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        if found:
            threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
            return proc, found.group(1), lines
    raise SystemExit("the server did not start:\n" + "".join(lines))


async def client(
    http: httpx.AsyncClient, texts: list[str], per_request: int, start: int, deadline: float, budget: list[int]
) -> list[tuple[float, int | str, int]]:
    """One client: a request at a time until the deadline or the shared budget runs out; (s, status, texts)."""
    out: list[tuple[float, int | str, int]] = []
    i = start
    while time.perf_counter() < deadline and budget[0] > 0:
        budget[0] -= 1
        batch = [texts[(i + k) % len(texts)] for k in range(per_request)]
        i += per_request
        t0 = time.perf_counter()
        retry_after = 0.0
        try:
            r = await http.post("/v1/predict", json={"texts": batch})
            status: int | str = r.status_code
            retry_after = float(r.headers.get("Retry-After", 0))
        except httpx.HTTPError as exc:
            status = type(exc).__name__  # a transport error (refused, reset, timeout) counts as an error
        out.append((time.perf_counter() - t0, status, per_request))
        if status == 503:
            await asyncio.sleep(retry_after)  # a well-behaved client waits as the server asks
    return out


async def run_load(url: str, texts: list[str], args: argparse.Namespace) -> tuple[list[Any], float]:
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        await http.post("/v1/predict", json={"texts": texts[:1]})  # warm-up: first forward pass allocates
        budget = [args.max_requests]
        start = time.perf_counter()
        deadline = start + args.duration
        tasks = [client(http, texts, args.texts_per_request, c * 97, deadline, budget) for c in range(args.clients)]
        results = await asyncio.gather(*tasks)
        return [r for rs in results for r in rs], time.perf_counter() - start


def server_batch_stats(url: str) -> dict[str, float]:
    """Mean texts per forward pass and the number of passes, from the server's Prometheus metrics."""
    text = httpx.get(url + "/metrics").text
    values = {
        name: float(m.group(1))
        for name in ("sentiment_lab_batch_size_sum", "sentiment_lab_batch_size_count")
        if (m := re.search(rf"^{name} (\S+)$", text, re.M))
    }
    count = values.get("sentiment_lab_batch_size_count", 0.0)
    return {"forward_passes": count, "mean_batch": values.get("sentiment_lab_batch_size_sum", 0.0) / max(count, 1)}


def offline_throughput(args: argparse.Namespace, texts: list[str]) -> float:
    """Reviews/s of Predictor.predict on the same reviews in this process (batch_size as the server's)."""
    from sentiment_lab.predictor import Predictor

    predictor = Predictor.load(args.model, backend=args.backend, batch_size=args.batch_size, quantized=args.int8)
    predictor.predict(texts[:8])
    sample = texts[: max(64, min(len(texts), 256))]
    t0 = time.perf_counter()
    predictor.predict(sample)
    return len(sample) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="model or run folder to serve")
    p.add_argument("--clients", type=int, default=8, help=f"concurrent clients (at most {MAX_CLIENTS})")
    p.add_argument("--duration", type=float, default=15, help=f"seconds of load (at most {MAX_DURATION_S})")
    p.add_argument("--max-requests", type=int, default=100_000, help="stop after this many requests in all")
    p.add_argument("--texts-per-request", type=int, default=1)
    p.add_argument("--reviews", type=int, default=512, help="distinct IMDb test reviews sent (cycled)")
    p.add_argument("--data", default=os.environ.get("IMDB_DIR", str(REPO.parent / "shared" / "data" / "imdb")))
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    p.add_argument("--int8", action="store_true")
    p.add_argument("--batch-size", type=int, default=32, help="model batch size inside the server")
    p.add_argument("--max-batch-size", type=int, default=32, help="server micro-batch size")
    p.add_argument("--max-wait-ms", type=float, default=5)
    p.add_argument("--max-queue", type=int, default=1024)
    p.add_argument("--offline", action="store_true", help="also time Predictor.predict on the same reviews")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.duration <= MAX_DURATION_S or args.max_requests < 1:
        p.error(f"--clients must be 1..{MAX_CLIENTS}, --duration 0..{MAX_DURATION_S} s, --max-requests >= 1")

    import pandas as pd

    reviews = pd.read_parquet(Path(args.data) / "test.parquet", columns=["text"])
    texts = reviews.sample(n=min(args.reviews, len(reviews)), random_state=args.seed)["text"].tolist()
    offline = offline_throughput(args, texts) if args.offline else None

    proc, url, log = start_server(args)
    try:
        deadline = time.monotonic() + 60
        while httpx.get(url + "/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit("the server never became ready:\n" + "".join(log))
            time.sleep(0.1)
        idle_mb = proc_status_mb(proc.pid, "VmRSS")
        sampler = RssSampler(proc.pid)
        sampler.start()
        records, elapsed = asyncio.run(run_load(url, texts, args))
        sampler.stop.set()
        sampler.join()
        batches = server_batch_stats(url)
        lifetime_peak_mb = proc_status_mb(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(30)

    latencies = np.array([s for s, status, _ in records if status == 200]) * 1000
    statuses: dict[str, int] = {}
    for _, status, _ in records:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    ok_texts = sum(n for _, status, n in records if status == 200)
    pct = (lambda q: float(np.percentile(latencies, q))) if len(latencies) else (lambda q: float("nan"))
    result = {
        "model": args.model,
        "backend": args.backend + ("-int8" if args.int8 else ""),
        "clients": args.clients,
        "texts_per_request": args.texts_per_request,
        "seconds": elapsed,
        "requests": len(records),
        "requests_per_s": len(records) / elapsed,
        "reviews_per_s": ok_texts / elapsed,
        "latency_ms": {"p50": pct(50), "p95": pct(95), "p99": pct(99), "max": float(latencies.max(initial=0))},
        "status_counts": statuses,
        "errors": sum(v for k, v in statuses.items() if k != "200"),
        "server_errors_5xx_except_503": sum(v for k, v in statuses.items() if k.startswith("5") and k != "503"),
        "rss_growth_first_vs_last_10s": sampler.growth(),
        "server": {
            "max_batch_size": args.max_batch_size,
            "max_wait_ms": args.max_wait_ms,
            "max_queue": args.max_queue,
            **batches,
            "rss_idle_mb": idle_mb,
            "rss_peak_under_load_mb": sampler.peak_mb,
            "rss_lifetime_peak_mb": lifetime_peak_mb,
        },
        "offline_reviews_per_s": offline,
        "cpu_count": os.cpu_count(),
    }
    lat = result["latency_ms"]
    print(
        f"{args.clients} clients x {elapsed:.1f} s: {len(records)} requests, {result['requests_per_s']:.1f} req/s, "
        f"{result['reviews_per_s']:.1f} reviews/s"
        + (f" (offline Predictor: {offline:.1f} reviews/s)" if offline else "")
    )
    print(f"latency ms: p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  max {lat['max']:.1f}")
    print(f"status counts: {statuses}  errors: {result['errors']}")
    print(
        f"server: {batches['forward_passes']:.0f} forward passes, mean batch {batches['mean_batch']:.1f} texts; "
        f"RSS idle {idle_mb:.0f} MiB, peak under load {sampler.peak_mb:.0f} MiB (lifetime peak {lifetime_peak_mb:.0f})"
    )
    growth = result["rss_growth_first_vs_last_10s"]
    if growth:
        print(
            f"RSS under load: first 10 s {growth['first_mb']:.0f} MiB, last 10 s {growth['last_mb']:.0f} MiB "
            f"({100 * growth['growth']:+.1f}%; flat means < 10%)"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
