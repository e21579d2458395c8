"""Serving command: `sentiment-lab serve MODEL_DIR` (REST API, web page, Prometheus metrics)."""

from __future__ import annotations

import argparse

from sentiment_lab.cli import add_predictor_args, command


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register serve."""
    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP: REST API, web page, Prometheus metrics",
        description="Serve MODEL_DIR with FastAPI + uvicorn: POST /v1/predict, POST /v1/explain, GET /v1/model, "
        "/healthz, /readyz, /metrics, API docs at /docs and a web page at /. Concurrent requests are batched "
        "into one forward pass. Stop with Ctrl+C or SIGTERM: requests in flight finish first.",
    )
    p.add_argument("model", metavar="MODEL_OR_RUN_DIR")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed at start)")
    p.add_argument(
        "--api-key",
        help="require this key on /v1/* (X-API-Key or Authorization: Bearer); prefer the SENTIMENT_LAB_API_KEY "
        "environment variable, which other users cannot read from the process list",
    )
    p.add_argument(
        "--allow-public", action="store_true", help="allow a non-loopback --host without an API key (open to all)"
    )
    add_predictor_args(p)
    p.add_argument("--no-explain", action="store_true", help="disable POST /v1/explain and the page's highlights")
    g = p.add_argument_group("batching and limits")
    g.add_argument("--max-batch-size", type=int, help="texts per micro-batch (default 32)")
    g.add_argument("--max-wait-ms", type=float, help="how long a micro-batch waits for more requests (default 5)")
    g.add_argument("--max-queue", type=int, help="texts waiting at once; beyond it 503 + Retry-After (default 1024)")
    g.add_argument("--timeout", dest="request_timeout_s", type=float, help="per-request timeout, s (default 30)")
    g.add_argument("--max-body-bytes", type=int, help="request body limit, 413 beyond it (default 1048576)")
    g.add_argument("--max-texts", type=int, help="texts per request, 422 beyond it (default 64)")
    g.add_argument("--max-chars", type=int, help="characters per text, 422 beyond it (default 20000)")
    g.add_argument("--graceful-timeout", type=int, default=30, help="seconds in-flight requests get at shutdown")
    g.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))


@command("serve")
def _serve(args: argparse.Namespace) -> int:
    from sentiment_lab.errors import ConfigError
    from sentiment_lab.server.app import serve

    if args.int8 and args.backend != "onnx":
        raise ConfigError("--int8 needs --backend onnx (the INT8 model is an ONNX file)")
    serve(
        args.model,
        args.host,
        args.port,
        backend=args.backend,
        quantized=args.int8,
        batch_size=args.batch_size,
        long_text=args.long_text,
        stride=args.stride,
        review_threshold=args.review_threshold,
        allow_pickle=args.allow_pickle,
        precision=args.precision,
        compile=args.compile,
        api_key=args.api_key,
        allow_public=args.allow_public,
        explain=not args.no_explain,
        graceful_timeout_s=args.graceful_timeout,
        log_level=args.log_level,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        request_timeout_s=args.request_timeout_s,
        max_body_bytes=args.max_body_bytes,
        max_texts=args.max_texts,
        max_chars=args.max_chars,
    )
    return 0
