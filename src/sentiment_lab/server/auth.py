"""The API key check on /v1/*: the key in `X-API-Key` or `Authorization: Bearer`, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from sentiment_lab.server.settings import ServerSettings

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's API key")
bearer = HTTPBearer(auto_error=False, description="the server's API key as a bearer token")


def api_key_check(settings: ServerSettings) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency: 401 unless the request carries settings.api_key (nothing to check without one)."""

    async def require_api_key(
        key: Annotated[str | None, Depends(api_key_header)],
        token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
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

    return require_api_key
