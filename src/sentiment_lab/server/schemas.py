"""Request and response bodies of the API, and the limits a request's texts must keep (`check_predict_texts`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, StrictInt, StrictStr, model_serializer

from sentiment_lab.server.settings import ServerSettings

# (text[, target class name or id]) -> an ExplainResponse as a dict: {label, prob_pos, target, words: [{text,
# score}], truncated}; a class the model does not have raises InputError. One of one argument explains the
# predicted class only (the API then refuses a target).
ExplainFn = Callable[..., dict[str, Any]]


class PredictRequest(BaseModel):
    """Texts to label, in order."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": ["A wonderful film."]}]})
    texts: list[StrictStr] = Field(
        description="review texts; each must hold a non-space character and at most max_chars characters"
    )


class Prediction(BaseModel):
    """The label of one text."""

    label: str = Field(description="the predicted class (NEGATIVE or POSITIVE for a binary model)")
    score: float = Field(description="probability of the label (calibrated when the model folder stores it)")
    prob_pos: float | None = Field(None, description="probability of POSITIVE (binary models; null otherwise)")
    needs_review: bool = Field(description="score below the model's review threshold: a person should look")
    probs: dict[str, float] | None = Field(None, description="probability of every class, by class name")

    # no return annotation: one would replace the model's schema in OpenAPI by a bare object
    @model_serializer(mode="wrap")
    def _omit_missing_probs(self, handler: SerializerFunctionWrapHandler):
        # a predict function that gives no class probabilities (a custom one) answers without the key
        data = handler(self)
        if data.get("probs") is None:
            data.pop("probs", None)
        return data


class PredictResponse(BaseModel):
    """One prediction per text, in request order."""

    predictions: list[Prediction]


class ExplainRequest(BaseModel):
    """One text to explain, toward the predicted class or the `target` class."""

    model_config = ConfigDict(extra="forbid")
    text: StrictStr
    target: StrictStr | StrictInt | None = Field(
        None, description="class to explain, by name or id (GET /v1/model lists them); default the predicted class"
    )


class WordAttribution(BaseModel):
    """A word as the model read it (after truncation) and its evidence: > 0 toward the explained class (POSITIVE
    for a binary model), < 0 against it."""

    text: str
    score: float


class ExplainResponse(BaseModel):
    """Integrated-gradients evidence per word, on the model's raw (uncalibrated) output."""

    label: str = Field(description="the predicted class")
    prob_pos: float | None = Field(None, description="probability of POSITIVE (binary models; null otherwise)")
    target: str | None = Field(None, description="the class the word scores point toward (K > 2 or a target asked)")
    words: list[WordAttribution]
    truncated: bool = Field(False, description="the text was longer than the model reads; words cover the part it read")

    # no return annotation: one would replace the model's schema in OpenAPI by a bare object
    @model_serializer(mode="wrap")
    def _omit_missing_target(self, handler: SerializerFunctionWrapHandler):
        # a binary model explained toward POSITIVE (no target asked) answers exactly as before the field existed
        data = handler(self)
        if data.get("target") is None:
            data.pop("target", None)
        return data


class Problem(BaseModel):
    """An error: `detail` says what was wrong and how to fix it."""

    detail: str


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
