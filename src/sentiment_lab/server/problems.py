"""Error answers: every error body is a Problem (`{"detail": "..."}`), as the OpenAPI schema says.

FastAPI's own 422 body is a list of errors and its answer to a body that is not UTF-8 is a bare 400; the
handlers here turn both into one-line Problems that never echo what was sent.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException


def problem_response(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A Problem answer: `{"detail": detail}` with this status (and headers such as Retry-After)."""
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


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


async def validation_error(request: Request, exc: Exception) -> Response:
    """422 Problem for a body that is not JSON or does not match the request schema."""
    assert isinstance(exc, RequestValidationError)
    return problem_response(422, describe_validation_error(exc))


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's HTTP errors, except a body that is not UTF-8: 422 saying so rather than a bare 400."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
        # FastAPI answers a body that is not UTF-8 with a bare 400 "error parsing the body".
        return problem_response(
            422, f"the request body is not valid JSON: it is not UTF-8 text ({exc.__cause__.reason})"
        )
    return await http_exception_handler(request, exc)


def add_problem_handlers(app: FastAPI) -> None:
    """Answer validation and HTTP errors of `app` as Problems."""
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
