"""The server over real HTTP: uvicorn on a free loopback port (in a thread, and as the `serve` command)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from sentiment_lab.server.app import create_app
from sentiment_lab.server.run import bind_socket
from sentiment_lab.server.settings import ServerSettings


class SlowModel:
    """A fake batch function that takes `delay_s` per call, records batch sizes and signals when it starts."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.batches: list[int] = []
        self.started = threading.Event()

    def __call__(self, texts: list[str]) -> list[dict[str, Any]]:
        self.started.set()
        time.sleep(self.delay_s)
        self.batches.append(len(texts))
        return [{"label": "POSITIVE", "score": 0.9, "prob_pos": 0.9, "needs_review": False} for _ in texts]


@contextmanager
def uvicorn_thread(app: Any, graceful_s: int = 10) -> Iterator[tuple[str, uvicorn.Server]]:
    """uvicorn serving `app` on a free loopback port in a thread; stopped (gracefully) on exit."""
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=graceful_s))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def test_concurrent_http_requests_are_batched_together() -> None:
    model = SlowModel(delay_s=0.05)
    app = create_app(model, ServerSettings(max_batch_size=64, max_wait_ms=100))
    with uvicorn_thread(app) as (url, _), ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: httpx.post(f"{url}/v1/predict", json={"texts": [f"r{i}"]}), range(16)))
        metrics = httpx.get(f"{url}/metrics").text
    assert [a.status_code for a in answers] == [200] * 16
    assert sum(model.batches) == 16 and max(model.batches) > 1  # fewer forward passes than requests
    assert "sentiment_lab_batch_size_count" in metrics


def test_limits_over_real_http() -> None:
    model = SlowModel(delay_s=0.5)
    settings = ServerSettings(max_queue=2, max_batch_size=1, max_wait_ms=0, max_body_bytes=2048, max_chars=10**6)
    app = create_app(model, settings)
    big = b'{"texts": ["' + b"x" * 4000 + b'"]}'
    with uvicorn_thread(app) as (url, _), ThreadPoolExecutor(2) as pool:
        declared = httpx.post(f"{url}/v1/predict", content=big, headers={"Content-Type": "application/json"})
        chunked = httpx.post(
            f"{url}/v1/predict", content=iter([big[:1000], big[1000:]]), headers={"Content-Type": "application/json"}
        )
        busy = [pool.submit(httpx.post, f"{url}/v1/predict", json={"texts": ["a"]}) for _ in range(2)]
        deadline = time.monotonic() + 5
        while "sentiment_lab_queue_texts 2.0" not in httpx.get(f"{url}/metrics").text:
            assert time.monotonic() < deadline, "the two requests never reached the batcher"
            time.sleep(0.01)
        overflow = httpx.post(f"{url}/v1/predict", json={"texts": ["b"]})
        finished = [f.result(timeout=10).status_code for f in busy]
    assert declared.status_code == 413 and chunked.status_code == 413
    assert "max_body_bytes=2048" in declared.json()["detail"]
    assert overflow.status_code == 503 and overflow.headers["Retry-After"] == "1"
    assert finished == [200, 200]  # below the queue limit nothing fails


def test_graceful_shutdown_finishes_in_flight_requests() -> None:
    model = SlowModel(delay_s=1.0)
    app = create_app(model, ServerSettings(max_wait_ms=0))
    with uvicorn_thread(app) as (url, server), ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(httpx.post, f"{url}/v1/predict", json={"texts": ["slow"]}, timeout=10)
        assert model.started.wait(5)
        server.should_exit = True  # what SIGTERM does
        answer = in_flight.result(timeout=15)
        deadline = time.monotonic() + 10
        while not server.force_exit and server.started and time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/healthz", timeout=0.5)
            except httpx.TransportError:
                break  # the listening socket is closed: no new requests are accepted
            time.sleep(0.05)
        else:
            pytest.fail("the server kept accepting connections after shutdown began")
    assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] == "POSITIVE"


_CLI = "import sys; from sentiment_lab.cli import main; sys.exit(main(sys.argv[1:]))"


def _start_cli(
    args: list[str], env: dict[str, str] | None = None, code: str = _CLI
) -> tuple[subprocess.Popen[str], str, list[str]]:
    """Run `sentiment-lab ARGS` (or `python -c CODE ARGS`) until it logs its URL; (process, URL, log lines)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        if found:
            # keep the pipe drained, collecting the log for the test
            threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
            return proc, found.group(1), lines
    proc.kill()
    pytest.fail("serve did not start:\n" + "".join(lines))


def test_serve_command_with_tiny_model_and_sigterm(tiny_model_dir: Path) -> None:
    key = "test-key-123"
    proc, url, log = _start_cli(
        ["serve", str(tiny_model_dir), "--port", "0", "--max-wait-ms", "1500", "--no-explain"],
        env={"SENTIMENT_LAB_API_KEY": key},
    )
    try:
        auth = {"X-API-Key": key}
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert httpx.post(f"{url}/v1/predict", json={"texts": ["good"]}).status_code == 401  # key from the env
        info = httpx.get(f"{url}/v1/model", headers=auth).json()
        assert info["model"]["backend"] == "torch" and info["explain"] is False
        with ThreadPoolExecutor(1) as pool:
            # max_wait_ms=1500 keeps this request in the batcher while SIGTERM arrives
            pending = pool.submit(
                httpx.post, f"{url}/v1/predict", json={"texts": ["A fine film.", "Awful."]}, headers=auth, timeout=30
            )
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            answer = pending.result(timeout=30)
        # uvicorn re-raises the signal it caught once shutdown is complete, so the exit status is SIGTERM's
        assert proc.wait(30) in (0, -signal.SIGTERM)
        time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert answer.status_code == 200
    assert [p["label"] in ("NEGATIVE", "POSITIVE") for p in answer.json()["predictions"]] == [True, True]
    assert "Application shutdown complete." in "".join(log)  # the lifespan's shutdown (batcher drain) ran


_SERVE = """import logging, sys
from sentiment_lab.predictor import PredictorOptions
from sentiment_lab.server.run import serve
logging.basicConfig(level=logging.INFO)
options = PredictorOptions(precision="fp32", review_threshold=1.0)
serve(sys.argv[1], port=0, options=options, explain=False, max_texts=3)
"""


def test_serve_loads_the_model_with_the_predictor_options_it_is_given(tiny_model_dir: Path) -> None:
    proc, url, _ = _start_cli([str(tiny_model_dir)], code=_SERVE)
    try:
        info = httpx.get(f"{url}/v1/model").json()
        answer = httpx.post(f"{url}/v1/predict", json={"texts": ["A fine film.", "Awful."]})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert info["model"]["precision"] == "fp32" and info["model"]["review_threshold"] == 1.0
    assert info["limits"]["max_texts"] == 3 and info["explain"] is False  # limits still travel as keywords
    assert [p["needs_review"] for p in answer.json()["predictions"]] == [True, True]  # every score is below 1.0


def test_serve_refuses_a_public_host_without_a_key(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sentiment_lab.cli import main

    monkeypatch.delenv("SENTIMENT_LAB_API_KEY", raising=False)
    assert main(["serve", str(tiny_model_dir), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to listen on 0.0.0.0 without an API key")
    assert "--allow-public" in err


def test_serve_reports_a_taken_port(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sentiment_lab.cli import main

    taken = bind_socket("127.0.0.1", 0)
    try:
        assert main(["serve", str(tiny_model_dir), "--port", str(taken.getsockname()[1]), "--no-explain"]) == 2
    finally:
        taken.close()
    assert "error: cannot listen on 127.0.0.1:" in capsys.readouterr().err
