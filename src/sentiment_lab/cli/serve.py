"""Serving command: `sentiment-lab serve MODEL_DIR` (REST API, web page, Prometheus metrics)."""

from __future__ import annotations

import argparse

from sentiment_lab.cli import command
from sentiment_lab.cli.common import predictor_options
from sentiment_lab.server.run import serve


@command("serve")
def _serve(args: argparse.Namespace) -> int:
    serve(
        args.model,
        args.host,
        args.port,
        options=predictor_options(args),
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
