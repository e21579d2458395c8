"""The REST API and web page of `sentiment-lab serve`: FastAPI app, limits, API key, Prometheus metrics, uvicorn.

`create_app` builds the app around any batch function (texts -> predictions), so the HTTP layer is tested with a
fake model; `serve` loads a Predictor from a model folder and runs the app with uvicorn. Every prediction goes
through the MicroBatcher, which groups concurrent requests into one forward pass in one model thread.

Status codes: 401 missing/wrong API key; 413 body over max_body_bytes; 422 invalid JSON, wrong types, unknown
fields, an empty list, too many texts, a text too long, or an empty/whitespace-only text (the whole request is
refused and the message names the text and the limit); 503 queue full or model not ready (with Retry-After);
504 the prediction took longer than request_timeout_s.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictStr, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sentiment_lab.errors import ConfigError, InputError
from sentiment_lab.server.batching import BatcherClosedError, BatchFn, MicroBatcher, QueueFullError

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
API_KEY_ENV = "SENTIMENT_LAB_API_KEY"
RETRY_AFTER_S = 1
# Content-Security-Policy of the page: scripts and styles from this server only, so even a review that slipped
# into the DOM as HTML could not run a script (the page also renders every string with textContent).
PAGE_CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
METRIC_PATHS = frozenset({"/", "/v1/predict", "/v1/explain", "/v1/model", "/healthz", "/readyz", "/metrics", "/docs"})

ExplainFn = Callable[[str], dict[str, Any]]

API_DESCRIPTION = """Label movie reviews NEGATIVE or POSITIVE: `POST /v1/predict` with `{"texts": ["...", ...]}`.

* **Auth**: when the server has an API key, every `/v1/*` call needs it as `X-API-Key: KEY` or
  `Authorization: Bearer KEY` (401 otherwise). `/healthz`, `/readyz`, `/metrics`, `/` and `/docs` are open.
* **Empty texts are refused, not flagged**: an empty or whitespace-only text makes the whole request fail with
  422 naming its index; nothing is predicted. Remove such texts before sending.
* **Limits** (values at `GET /v1/model`): body over `max_body_bytes` -> 413; more than `max_texts` texts or a
  text over `max_chars` characters -> 422 naming the limit; invalid JSON, wrong types or unknown fields -> 422.
* **Load**: concurrent requests share forward passes. A full queue answers 503 with `Retry-After` (seconds);
  a request not answered within `request_timeout_s` gets 504.
"""


class ServerSettings(BaseModel):
    """Limits, batching and API key of the server (set by the `serve` flags of similar names)."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(32, ge=1, le=4096, description="texts per forward pass")
    max_wait_ms: float = Field(5.0, ge=0, le=10_000, description="how long a batch waits for more requests")
    max_queue: int = Field(1024, ge=1, description="texts waiting at once; beyond it requests get 503")
    request_timeout_s: float = Field(30.0, gt=0, description="a request still unanswered after this gets 504")
    max_body_bytes: int = Field(1_048_576, ge=256, description="request body limit (413 beyond it)")
    max_texts: int = Field(64, ge=1, description="texts per request (422 beyond it)")
    max_chars: int = Field(20_000, ge=1, description="characters per text (422 beyond it)")
    max_explain_pending: int = Field(2, ge=1, description="explanations running or waiting at once (503 beyond)")
    api_key: SecretStr | None = Field(None, description="required in X-API-Key or Authorization: Bearer")


def build_settings(**values: Any) -> ServerSettings:
    """ServerSettings from keyword values (None means the default); ConfigError naming each bad value."""
    try:
        return ServerSettings(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})" for e in err.errors()
        )
        raise ConfigError(f"invalid server setting: {problems}") from None


# Request and response bodies ---------------------------------------------------------------------------------------


class PredictRequest(BaseModel):
    """Texts to label, in order."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": ["A wonderful film."]}]})
    texts: list[StrictStr] = Field(
        description="review texts; each must hold a non-space character and at most max_chars characters"
    )


class Prediction(BaseModel):
    """The label of one text."""

    label: str = Field(description="NEGATIVE or POSITIVE")
    score: float = Field(description="probability of the label (calibrated when the model folder stores it)")
    prob_pos: float = Field(description="probability of POSITIVE")
    needs_review: bool = Field(description="score below the model's review threshold: a person should look")


class PredictResponse(BaseModel):
    """One prediction per text, in request order."""

    predictions: list[Prediction]


class ExplainRequest(BaseModel):
    """One text to explain."""

    model_config = ConfigDict(extra="forbid")
    text: StrictStr


class WordAttribution(BaseModel):
    """A word as the model read it (after truncation) and its evidence: > 0 toward POSITIVE, < 0 toward NEGATIVE."""

    text: str
    score: float


class ExplainResponse(BaseModel):
    """Integrated-gradients evidence per word, on the model's raw (uncalibrated) output."""

    label: str
    prob_pos: float
    words: list[WordAttribution]
    truncated: bool = Field(False, description="the text was longer than the model reads; words cover the part it read")


class Problem(BaseModel):
    """An error: `detail` says what was wrong and how to fix it."""

    detail: str


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def check_predict_texts(texts: list[str], settings: ServerSettings) -> str | None:
    """The 422 message for the first limit `texts` break (count, length, empty, invalid Unicode), else None."""
    if not texts:
        return 'texts is empty; send at least one text: {"texts": ["a review"]}'
    if len(texts) > settings.max_texts:
        return f"{len(texts)} texts in one request; the limit is max_texts={settings.max_texts} (split the request)"
    for i, text in enumerate(texts):
        if len(text) > settings.max_chars:
            return f"text {i} has {len(text)} characters; the limit is max_chars={settings.max_chars} (shorten it)"
        if not text.strip():
            return f"text {i} is empty or whitespace only; remove it or give the review's text"
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            # JSON may escape a lone UTF-16 surrogate ("\ud800"): valid JSON, but no character (the tokenizer
            # refuses it), so it is named here rather than failing the batch as a 500.
            return (
                f"text {i} holds a lone surrogate (U+{ord(text[exc.start]):04X}) at character {exc.start}, which is "
                "not a Unicode character; send valid UTF-8 text"
            )
    return None


def describe_validation_error(exc: RequestValidationError) -> str:
    """One line for FastAPI's body validation errors (the schema's Problem has a string detail)."""
    problems = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e.get("loc", ())) or "body"
        problem = f"{where}: {e.get('msg', 'invalid')}"
        reason = (e.get("ctx") or {}).get("error")
        if e.get("type") == "json_invalid" and reason:
            problem += f" ({reason})"
        problems.append(problem)
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    return f"invalid request: {shown}. The API is described at /docs"


# Metrics -------------------------------------------------------------------------------------------------------------


class ServerMetrics:
    """Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sentiment_lab_http_requests",
            "HTTP requests by path and status",
            ["path", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sentiment_lab_http_request_duration_seconds",
            "HTTP request latency by path",
            ["path"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "sentiment_lab_batch_size",
            "texts per forward pass of the micro-batcher",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "sentiment_lab_batch_duration_seconds",
            "seconds per forward pass of the micro-batcher",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.texts = Counter("sentiment_lab_texts_predicted", "texts labelled", registry=self.registry)
        self.queue = Gauge("sentiment_lab_queue_texts", "texts waiting or in the running batch", registry=self.registry)

    def observe_batch(self, size: int, seconds: float) -> None:
        """Record one forward pass (the batcher's on_batch hook)."""
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)


class MetricsMiddleware:
    """Counts every HTTP response by path and status (413s and 401s included) and times it."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Unknown paths share one label so a scanner cannot blow up the number of series.
        path = scope["path"] if scope["path"] in METRIC_PATHS else "other"
        status = 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)


class BodySizeLimitMiddleware:
    """413 for a request body over `max_bytes`, declared (Content-Length) or streamed (chunked), before parsing.

    FastAPI's own max_body_size answers a bare "Content Too Large" that cannot say which limit was hit, so the
    body is read here, counted as it arrives, and replayed to the app when it fits.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body is larger than max_body_bytes={self.max_bytes}; send fewer or shorter texts per request"
        await _error(413, detail, {"Connection": "close"})(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await _error(400, "invalid Content-Length header")(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the app expects

        await self.app(scope, replay, send)


# The app -------------------------------------------------------------------------------------------------------------


def create_app(
    predict_batch: BatchFn,
    settings: ServerSettings | None = None,
    model_info: dict[str, Any] | None = None,
    explain: ExplainFn | None = None,
) -> FastAPI:
    """The FastAPI app serving `predict_batch` (texts -> [{label, score, prob_pos, needs_review}]).

    explain: text -> {label, prob_pos, words: [{text, score}], truncated}; enables POST /v1/explain and the
    page's highlights. It runs in the model thread, one call at a time, like the batches.
    """
    from fastapi_offline import FastAPIOffline

    settings = settings or ServerSettings()
    metrics = ServerMetrics()
    state: dict[str, Any] = {"ready": False, "explain_pending": 0}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One model thread shared by batches and explanations: a CPU model runs one forward pass at a time.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        batcher = MicroBatcher(
            predict_batch,
            settings.max_batch_size,
            settings.max_wait_ms,
            settings.max_queue,
            on_batch=metrics.observe_batch,
            executor=executor,
        )
        metrics.queue.set_function(lambda: batcher.pending)
        await batcher.start()
        state.update(batcher=batcher, executor=executor, ready=True)
        try:
            yield
        finally:
            # uvicorn calls this after in-flight requests have finished (timeout_graceful_shutdown).
            state["ready"] = False
            await batcher.stop()
            executor.shutdown(wait=True)

    app = FastAPIOffline(
        title="sentiment-lab",
        summary="Binary sentiment (NEGATIVE/POSITIVE) of review texts.",
        description=API_DESCRIPTION,
        version="1",
        lifespan=lifespan,
    )
    # Added last = outermost: metrics see every answer, including the body limit's 413s.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.settings = settings
    app.state.metrics = metrics

    # Every error body is a Problem ({"detail": "..."}), as the schema says: FastAPI's own 422 body is a list.
    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _error(422, describe_validation_error(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI answers a body that is not UTF-8 with a bare 400 "error parsing the body".
            return _error(422, f"the request body is not valid JSON: it is not UTF-8 text ({exc.__cause__.reason})")
        return await http_exception_handler(request, exc)

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)

    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's API key")
    bearer = HTTPBearer(auto_error=False, description="the server's API key as a bearer token")

    # Defaults rather than Annotated[...]: with postponed annotations FastAPI cannot see these local objects.
    async def require_api_key(
        key: str | None = Depends(api_key_header),
        token: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        if settings.api_key is None:
            return
        given = key if key is not None else token.credentials if token is not None else None
        expected = settings.api_key.get_secret_value().encode()
        # Constant-time comparison: response timing must not reveal how much of a guessed key is right.
        if given is None or not hmac.compare_digest(given.encode(), expected):
            raise StarletteHTTPException(
                401,
                "missing or wrong API key; send it as the X-API-Key header or Authorization: Bearer KEY",
                headers={"WWW-Authenticate": "Bearer"},
            )

    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": Problem, "description": text}
        for code, text in {
            401: "missing or wrong API key",
            413: "body over max_body_bytes",
            422: "invalid JSON, wrong types, an empty list, too many texts, a text too long or empty",
            503: "queue full or model not ready; retry after Retry-After seconds",
            504: "not answered within request_timeout_s",
        }.items()
    }
    secured = [Depends(require_api_key)]

    @app.post("/v1/predict", response_model=PredictResponse, responses=errors, dependencies=secured, tags=["predict"])
    async def predict(body: PredictRequest) -> Any:
        """Label texts: one {label, score, prob_pos, needs_review} per text, in order.

        Requests arriving together are batched into one forward pass. An empty or whitespace-only text makes
        the whole request fail with 422 naming its index (no partial answers), as do more than max_texts texts
        or a text over max_chars characters.
        """
        problem = check_predict_texts(body.texts, settings)
        if problem:
            return _error(422, problem)
        batcher: MicroBatcher | None = state.get("batcher")
        if batcher is None:
            return _error(503, "the model is not ready yet", {"Retry-After": str(RETRY_AFTER_S)})
        try:
            preds = await asyncio.wait_for(batcher.submit(body.texts), settings.request_timeout_s)
        except QueueFullError as exc:
            return _error(503, f"server busy: {exc}; retry later", {"Retry-After": str(RETRY_AFTER_S)})
        except BatcherClosedError as exc:
            return _error(503, str(exc), {"Retry-After": str(RETRY_AFTER_S)})
        except asyncio.TimeoutError:
            return _error(504, f"no answer within request_timeout_s={settings.request_timeout_s:g} s; retry later")
        except InputError as exc:
            return _error(422, str(exc))
        except Exception:
            log.exception("prediction failed")  # details go to the server log, not to the client
            return _error(500, "prediction failed; the server log has the details")
        metrics.texts.inc(len(preds))
        return {"predictions": preds}

    @app.post(
        "/v1/explain",
        response_model=ExplainResponse,
        responses=errors | {404: {"model": Problem, "description": "explanations unavailable for this model"}},
        dependencies=secured,
        tags=["predict"],
    )
    async def explain_text(body: ExplainRequest) -> Any:
        """Word-level evidence (integrated gradients) for one text: > 0 pushes toward POSITIVE, < 0 toward NEGATIVE.

        Slow (tens of forward passes), so at most max_explain_pending run or wait at once; more get 503.
        """
        if explain is None:
            return _error(404, "explanations are not available for this model (needs its torch weights and captum)")
        problem = check_predict_texts([body.text], settings)
        if problem:
            return _error(422, problem.replace("text 0", "text"))
        if not state["ready"]:
            return _error(503, "the model is not ready (starting or shutting down)", {"Retry-After": "1"})
        if state["explain_pending"] >= settings.max_explain_pending:
            return _error(503, "explanations busy; retry later", {"Retry-After": str(RETRY_AFTER_S)})
        state["explain_pending"] += 1
        future = asyncio.get_running_loop().run_in_executor(state["executor"], explain, body.text)

        def release(_: Any) -> None:
            state["explain_pending"] -= 1  # when the work ends, not when the client stops waiting

        future.add_done_callback(release)
        try:
            return await asyncio.wait_for(asyncio.shield(future), settings.request_timeout_s)
        except asyncio.TimeoutError:
            return _error(504, f"no answer within request_timeout_s={settings.request_timeout_s:g} s")
        except InputError as exc:
            return _error(422, str(exc))
        except Exception:
            log.exception("explanation failed")  # details go to the server log, not to the client
            return _error(500, "explanation failed; the server log has the details")

    @app.get("/v1/model", dependencies=secured, responses=errors, tags=["model"])
    async def model() -> dict[str, Any]:
        """The model (folder, backend, truncation, review threshold, labels) and this server's limits."""
        limits = settings.model_dump(exclude={"api_key"})
        return {"model": model_info or {}, "limits": limits, "explain": explain is not None}

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"model": Problem, "description": "not ready"}})
    async def readyz() -> Any:
        """Readiness: the model is loaded and the batcher accepts requests (503 while starting or stopping)."""
        batcher = state.get("batcher")
        if not state["ready"] or batcher is None or not batcher.running:
            return _error(503, "not ready: the model is loading or the server is shutting down")
        return {"status": "ready"}

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus metrics: requests by path and status, latency, batch sizes, queue length."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    page_headers = {"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=page_headers)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


# Explanations for the page -----------------------------------------------------------------------------------------


def model_explainer(predictor: Any, n_steps: int = 20) -> ExplainFn | None:
    """An explain function for the predictor's model folder, or None when explanations are not possible.

    Reuses the predictor's torch model when it is fp32 (the model thread runs one call at a time, so sharing
    it is safe); otherwise (ONNX, or bf16/fp16 weights, too coarse for gradients) it loads the fp32 weights once.
    """
    from sentiment_lab.analysis.calibration import rescale_prob_pos

    try:
        from sentiment_lab.analysis.explain import (
            SPECIAL_TOKENS,
            explain_texts,
            load_for_explanation,
            merge_wordpieces,
        )
    except ImportError as exc:  # captum missing: the page simply shows no highlights
        log.warning("explanations disabled: %s", exc)
        return None
    if predictor.model is not None and predictor.precision == "fp32":
        model, tokenizer, settings = predictor.model, predictor.tokenizer, predictor.settings
    else:
        try:
            model, tokenizer, settings = load_for_explanation(predictor.model_dir)
        except Exception as exc:  # an ONNX-only folder: serving works, explanations do not
            log.warning("explanations disabled: cannot load torch weights from %s: %s", predictor.model_dir, exc)
            return None
    names = [str(model.config.id2label.get(i, "")).upper() for i in range(2)]
    positive = names.index("POSITIVE") if "POSITIVE" in names else 1

    def explain_one(text: str) -> dict[str, Any]:
        e = explain_texts(model, tokenizer, settings, [text], n_steps)[0]
        words, scores = merge_wordpieces(e.tokens, e.attributions)
        sign = 1.0 if e.pred == positive else -1.0  # attributions point toward the predicted class
        # The model reads at most max_length tokens (cut as in training); the page says when words are missing.
        truncated = len(tokenizer(text, verbose=False)["input_ids"]) > len(e.tokens)
        return {
            "label": e.label_names[e.pred].upper(),
            # temperature-scaled, as /v1/predict reports it for the same text
            "prob_pos": rescale_prob_pos(e.prob_pos, predictor.temperature),
            "words": [
                {"text": w, "score": sign * float(s)}
                for w, s in zip(words, scores, strict=True)
                if w not in SPECIAL_TOKENS
            ],
            "truncated": truncated,
        }

    return explain_one


# Running it ----------------------------------------------------------------------------------------------------------


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
    backend: str = "torch",
    quantized: bool = False,
    batch_size: int = 32,
    long_text: str = "truncate",
    stride: int | None = None,
    review_threshold: float | None = None,
    allow_pickle: bool = False,
    precision: str = "auto",
    compile: bool = False,
    api_key: str | None = None,
    allow_public: bool = False,
    explain: bool = True,
    graceful_timeout_s: int = 30,
    log_level: str = "info",
    **limits: Any,
) -> None:
    """Serve a model folder over HTTP until SIGINT/SIGTERM; in-flight requests finish before it exits.

    api_key: required on /v1/*; default the SENTIMENT_LAB_API_KEY environment variable. Without one the server
    binds only loopback hosts unless allow_public. limits: ServerSettings fields (max_batch_size, max_wait_ms,
    max_queue, request_timeout_s, max_body_bytes, max_texts, max_chars).
    """
    import uvicorn

    from sentiment_lab.inference import Predictor

    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    check_bind(host, api_key, allow_public)
    settings = build_settings(api_key=api_key, **limits)
    if isinstance(graceful_timeout_s, bool) or not isinstance(graceful_timeout_s, int) or graceful_timeout_s < 0:
        raise ConfigError(f"graceful_timeout_s must be a whole number of seconds >= 0, got {graceful_timeout_s!r}")
    predictor = Predictor.load(
        model_dir,
        backend=backend,
        batch_size=batch_size,
        long_text=long_text,
        stride=stride,
        review_threshold=review_threshold,
        quantized=quantized,
        allow_pickle=allow_pickle,
        precision=precision,
        compile=compile,
    )
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
