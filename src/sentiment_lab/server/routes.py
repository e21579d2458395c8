"""The API's routes: POST /v1/predict and /v1/explain, GET /v1/model (behind the API key), /healthz, /readyz,
/metrics (open)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sentiment_lab.errors import InputError
from sentiment_lab.server.auth import api_key_check
from sentiment_lab.server.batching import BatcherClosedError, QueueFullError
from sentiment_lab.server.lifespan import ModelState
from sentiment_lab.server.metrics import ServerMetrics
from sentiment_lab.server.problems import problem_response
from sentiment_lab.server.schemas import (
    ExplainFn,
    ExplainRequest,
    ExplainResponse,
    PredictRequest,
    PredictResponse,
    Problem,
    check_predict_texts,
)
from sentiment_lab.server.settings import ServerSettings

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
# The error answers of the /v1 routes, as the OpenAPI schema lists them.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": text}
    for code, text in {
        401: "missing or wrong API key",
        413: "body over max_body_bytes",
        422: "invalid JSON, wrong types, an empty list, too many texts, a text too long or empty",
        503: "queue full or model not ready; retry after Retry-After seconds",
        504: "not answered within request_timeout_s",
    }.items()
}
NO_EXPLAINER = {404: {"model": Problem, "description": "explanations unavailable for this model"}}


def _takes_target(explain: ExplainFn) -> bool:
    """Whether the explain function accepts a second argument, the target class."""
    try:
        params = list(inspect.signature(explain).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) >= 2


def build_router(
    settings: ServerSettings,
    metrics: ServerMetrics,
    state: ModelState,
    model_info: dict[str, Any] | None,
    explain: ExplainFn | None,
) -> APIRouter:
    """The routes of one app; `state` is filled by the app's lifespan (batcher, model thread)."""
    router = APIRouter()
    explain_takes_target = explain is not None and _takes_target(explain)
    secured = [Depends(api_key_check(settings))]
    retry_later = {"Retry-After": str(RETRY_AFTER_S)}

    @router.post(
        "/v1/predict", response_model=PredictResponse, responses=ERROR_RESPONSES, dependencies=secured, tags=["predict"]
    )
    async def predict(body: PredictRequest) -> Any:
        """Label texts: one {label, score, prob_pos (two classes only), needs_review, probs} per text, in order.

        Requests arriving together are batched into one forward pass. An empty or whitespace-only text makes
        the whole request fail with 422 naming its index (no partial answers), as do more than max_texts texts
        or a text over max_chars characters.
        """
        problem = check_predict_texts(body.texts, settings)
        if problem:
            return problem_response(422, problem)
        if state.batcher is None:
            return problem_response(503, "the model is not ready yet", retry_later)
        try:
            preds = await asyncio.wait_for(state.batcher.submit(body.texts), settings.request_timeout_s)
        except QueueFullError as exc:
            return problem_response(503, f"server busy: {exc}; retry later", retry_later)
        except BatcherClosedError as exc:
            return problem_response(503, str(exc), retry_later)
        except asyncio.TimeoutError:
            timeout = settings.request_timeout_s
            return problem_response(504, f"no answer within request_timeout_s={timeout:g} s; retry later")
        except InputError as exc:
            return problem_response(422, str(exc))
        except Exception:
            log.exception("prediction failed")  # details go to the server log, not to the client
            return problem_response(500, "prediction failed; the server log has the details")
        metrics.texts.inc(len(preds))
        return {"predictions": preds}

    @router.post(
        "/v1/explain",
        response_model=ExplainResponse,
        responses=ERROR_RESPONSES | NO_EXPLAINER,
        dependencies=secured,
        tags=["predict"],
    )
    async def explain_text(body: ExplainRequest) -> Any:
        """Word-level evidence (integrated gradients) for one text: > 0 pushes toward POSITIVE, < 0 toward NEGATIVE
        (binary); toward `target` when given (a class name or id from GET /v1/model), for K > 2 models by default
        toward the predicted class. A class the model does not have is a 422 naming its classes.

        Slow (tens of forward passes), so at most max_explain_pending run or wait at once; more get 503.
        """
        if explain is None:
            return problem_response(
                404,
                "explanations are not available for this model (they need one model's torch weights and captum; "
                "an ensemble averages several models: explain one of its members)",
            )
        problem = check_predict_texts([body.text], settings)
        if problem:
            return problem_response(422, problem.replace("text 0", "text"))
        if body.target is not None and not explain_takes_target:
            return problem_response(422, "this server's explainer explains the predicted class only; omit target")
        if not state.ready:
            return problem_response(503, "the model is not ready (starting or shutting down)", retry_later)
        if state.explain_pending >= settings.max_explain_pending:
            return problem_response(503, "explanations busy; retry later", retry_later)
        state.explain_pending += 1
        # an explain function of one argument (a custom one) is called as before
        args = (body.text,) if body.target is None else (body.text, body.target)
        future = asyncio.get_running_loop().run_in_executor(state.executor, explain, *args)

        def release(_: Any) -> None:
            state.explain_pending -= 1  # when the work ends, not when the client stops waiting

        future.add_done_callback(release)
        try:
            return await asyncio.wait_for(asyncio.shield(future), settings.request_timeout_s)
        except asyncio.TimeoutError:
            return problem_response(504, f"no answer within request_timeout_s={settings.request_timeout_s:g} s")
        except InputError as exc:
            return problem_response(422, str(exc))
        except Exception:
            log.exception("explanation failed")  # details go to the server log, not to the client
            return problem_response(500, "explanation failed; the server log has the details")

    @router.get("/v1/model", dependencies=secured, responses=ERROR_RESPONSES, tags=["model"])
    async def model() -> dict[str, Any]:
        """The model (folder, backend, truncation, review threshold, labels) and this server's limits."""
        limits = settings.model_dump(exclude={"api_key"})
        return {"model": model_info or {}, "limits": limits, "explain": explain is not None}

    @router.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @router.get("/readyz", tags=["ops"], responses={503: {"model": Problem, "description": "not ready"}})
    async def readyz() -> Any:
        """Readiness: the model is loaded and the batcher accepts requests (503 while starting or stopping)."""
        if not state.ready or state.batcher is None or not state.batcher.running:
            return problem_response(503, "not ready: the model is loading or the server is shutting down")
        return {"status": "ready"}

    @router.get("/metrics", tags=["ops"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus metrics: requests by path and status, latency, batch sizes, queue length."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
