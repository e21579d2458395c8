"""Running the server: `serve` loads a model folder and serves it with uvicorn on a checked host and port."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from pathlib import Path
from typing import Any

import uvicorn

from sentiment_lab.errors import ConfigError
from sentiment_lab.predictor import Predictor, PredictorOptions
from sentiment_lab.server.app import create_app
from sentiment_lab.server.explainer import model_explainer
from sentiment_lab.server.settings import API_KEY_ENV, build_settings

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to any interface


def check_bind(host: str, api_key: str | None, allow_public: bool) -> None:
    """Refuse a non-loopback host without an API key unless allow_public is set."""
    if not is_loopback(host) and not api_key and not allow_public:
        raise ConfigError(
            f"refusing to listen on {host} without an API key: anyone who can reach this machine could use the "
            f"model. Set --api-key (or {API_KEY_ENV}), or pass --allow-public to serve it openly"
        )


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or ConfigError saying why not (port taken, unknown host)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port or --host"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(
    model_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    options: PredictorOptions | None = None,
    api_key: str | None = None,
    allow_public: bool = False,
    explain: bool = True,
    graceful_timeout_s: int = 30,
    log_level: str = "info",
    **limits: Any,
) -> None:
    """Serve a model folder over HTTP until SIGINT/SIGTERM; in-flight requests finish before it exits.

    options: how the model is loaded and run (backend, precision, batch size, long texts, ...); default
    PredictorOptions(). api_key: required on /v1/*; default the SENTIMENT_LAB_API_KEY environment variable.
    Without one the server binds only loopback hosts unless allow_public. limits: ServerSettings fields
    (max_batch_size, max_wait_ms, max_queue, request_timeout_s, max_body_bytes, max_texts, max_chars,
    max_explain_pending).
    """
    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    check_bind(host, api_key, allow_public)
    settings = build_settings(api_key=api_key, **limits)
    if isinstance(graceful_timeout_s, bool) or not isinstance(graceful_timeout_s, int) or graceful_timeout_s < 0:
        raise ConfigError(f"graceful_timeout_s must be a whole number of seconds >= 0, got {graceful_timeout_s!r}")
    predictor = Predictor.load(model_dir, options or PredictorOptions())
    explainer = model_explainer(predictor) if explain else None
    app = create_app(predictor.predict, settings, predictor.info(), explainer)
    sock = bind_socket(host, port)  # bound here so a taken port is a clear error, not a uvicorn exit
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    if not is_loopback(host) and not api_key:
        log.warning("serving WITHOUT an API key on %s (--allow-public): anyone who can reach it can use it", host)
    log.info("serving %s on http://%s:%d (page /, API docs /docs)", predictor.model_dir, shown, bound_port)
    config = uvicorn.Config(
        app,
        log_level=log_level,
        timeout_graceful_shutdown=graceful_timeout_s,
        server_header=False,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
