"""The server's limits, batching and API key: `ServerSettings`, set by the `serve` flags of similar names."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from sentiment_lab.errors import ConfigError

API_KEY_ENV = "SENTIMENT_LAB_API_KEY"


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
