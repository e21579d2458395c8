"""Request and response bodies of the API, and the limits a request's texts must keep (`check_predict_texts`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from sentiment_lab.server.settings import ServerSettings

# text -> an ExplainResponse as a dict: {label, prob_pos, words: [{text, score}], truncated}
ExplainFn = Callable[[str], dict[str, Any]]


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
