"""The FastAPI app of `sentiment-lab serve`: the REST API, the web page, limits, API key and Prometheus metrics.

`create_app` builds the app around any batch function (texts -> predictions), so the HTTP layer is tested with a
fake model; `run.serve` loads a Predictor from a model folder and runs the app with uvicorn. Every prediction goes
through the MicroBatcher, which groups concurrent requests into one forward pass in one model thread.

Status codes: 401 missing/wrong API key; 413 body over max_body_bytes; 422 invalid JSON, wrong types, unknown
fields, an empty list, too many texts, a text too long, or an empty/whitespace-only text (the whole request is
refused and the message names the text and the limit); 503 queue full or model not ready (with Retry-After);
504 the prediction took longer than request_timeout_s.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from sentiment_lab.server.batching import BatchFn
from sentiment_lab.server.lifespan import ModelState, model_lifespan
from sentiment_lab.server.metrics import ServerMetrics
from sentiment_lab.server.middleware import BodySizeLimitMiddleware, MetricsMiddleware
from sentiment_lab.server.page import add_page
from sentiment_lab.server.problems import add_problem_handlers
from sentiment_lab.server.routes import build_router
from sentiment_lab.server.schemas import ExplainFn
from sentiment_lab.server.settings import ServerSettings

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


def create_app(
    predict_batch: BatchFn,
    settings: ServerSettings | None = None,
    model_info: dict[str, Any] | None = None,
    explain: ExplainFn | None = None,
) -> FastAPI:
    """The FastAPI app serving `predict_batch` (texts -> [{label, score, prob_pos (two classes), needs_review, probs}]).

    explain: text -> {label, prob_pos, words: [{text, score}], truncated}; enables POST /v1/explain and the
    page's highlights. It runs in the model thread, one call at a time, like the batches.
    """
    settings = settings or ServerSettings()
    metrics = ServerMetrics()
    state = ModelState()
    app = FastAPIOffline(  # FastAPI with the /docs assets served from this server, not a CDN
        title="sentiment-lab",
        summary="Binary sentiment (NEGATIVE/POSITIVE) of review texts.",
        description=API_DESCRIPTION,
        version="1",
        lifespan=model_lifespan(predict_batch, settings, metrics, state),
    )
    # Added last = outermost: metrics see every answer, including the body limit's 413s.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.settings = settings
    app.state.metrics = metrics
    add_problem_handlers(app)
    app.include_router(build_router(settings, metrics, state, model_info, explain))
    add_page(app)
    return app
