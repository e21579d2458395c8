"""The model sidecar, `model/sentiment_lab.json`: one validated schema, read and written only here.

It holds what turns a raw review into model inputs exactly as in training (the text settings), the label names,
and what later stages learned about the model: the calibrated temperature and the abstention threshold (`report`
stores them). `predict`, `serve`, `evaluate`, `export` and `explain` read it through `read_sidecar`.

Format 1 nests the text settings under `text`; files written before the format had a version (flat keys) are
read as well. A plain Hugging Face folder has no sidecar: it gets head truncation at the model's maximum length
(at most 512 tokens), temperature 1 and the default review threshold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sentiment_lab.config import ExperimentConfig
from sentiment_lab.errors import ModelError
from sentiment_lab.io import write_json_atomic

SIDECAR_FILE = "sentiment_lab.json"
FORMAT_VERSION = 1
PLAIN_MODEL_MAX_LENGTH = 512  # a folder without a sidecar: the model's own limit, capped here
DEFAULT_REVIEW_THRESHOLD = 0.70  # the seed policy: below 70% confidence a person looks at the review
TEXT_KEYS = ("max_length", "truncation", "head_tokens", "lowercase", "strip_html")


class TextSettings(BaseModel):
    """Everything needed to turn a raw review into model inputs exactly as in training."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_length: int = Field(ge=8)
    truncation: Literal["head", "tail", "head_tail"] = "head"
    head_tokens: int | None = Field(None, ge=0)  # head_tail: tokens kept from the start; default a quarter
    lowercase: bool = False
    strip_html: bool = False
    # how a text longer than max_length is read: cut as `truncation` says, or as overlapping windows whose logits are
    # averaged (a model trained with `tokenization.long_text: chunk`); predict/serve/evaluate default to it
    long_text: Literal["truncate", "chunk"] = "truncate"

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> TextSettings:
        """The text settings a training config asks for."""
        t = cfg.tokenization
        return cls(
            max_length=t.max_length,
            truncation=t.truncation,
            head_tokens=t.head_tokens,
            lowercase=cfg.data.lowercase,
            strip_html=cfg.data.strip_html,
            long_text=t.long_text,
        )


class ModelSidecar(BaseModel):
    """The contents of `sentiment_lab.json`."""

    model_config = ConfigDict(extra="forbid")

    format_version: Literal[1] = FORMAT_VERSION
    text: TextSettings
    labels: list[str] | None = None  # class names by index, as the model's id2label
    ordinal: bool = False  # the classes are ordered (data.ordinal): stars, ratings
    temperature: float = Field(1.0, gt=0.0, allow_inf_nan=False)  # calibrated softmax temperature
    abstain_threshold: float | None = Field(None, ge=0.0, le=1.0)  # needs_review below this confidence
    target_accuracy: float | None = Field(None, gt=0.0, le=1.0)  # what the threshold was chosen for

    @model_validator(mode="before")
    @classmethod
    def _upgrade_flat(cls, data: Any) -> Any:
        """Files from before format 1 keep the text settings at the top level and have no version."""
        if isinstance(data, dict) and "format_version" not in data and "text" not in data:
            data = dict(data)
            data["text"] = {k: data.pop(k) for k in TEXT_KEYS if k in data}
            data["format_version"] = FORMAT_VERSION
        return data

    def review_threshold(self) -> float:
        """The confidence below which a prediction needs a person: the calibrated one, else the default 0.70."""
        return self.abstain_threshold if self.abstain_threshold is not None else DEFAULT_REVIEW_THRESHOLD


def _problem(path: Path, detail: str) -> ModelError:
    return ModelError(f"{path} is not a valid model sidecar ({detail}); restore it, or delete it to use the defaults")


def plain_model_sidecar(tokenizer: Any | None = None) -> ModelSidecar:
    """The sidecar a plain Hugging Face folder implies: head truncation at min(model limit, 512)."""
    limit = getattr(tokenizer, "model_max_length", PLAIN_MODEL_MAX_LENGTH) if tokenizer is not None else 512
    return ModelSidecar(text=TextSettings(max_length=min(int(limit), PLAIN_MODEL_MAX_LENGTH)))


def read_sidecar(model_dir: str | Path, tokenizer: Any | None = None) -> ModelSidecar:
    """The model folder's sidecar; a folder without one gets `plain_model_sidecar(tokenizer)`.

    A file that is not JSON or breaks the schema raises ModelError naming the file, the key and the fix.
    """
    path = Path(model_dir) / SIDECAR_FILE
    if not path.exists():
        return plain_model_sidecar(tokenizer)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _problem(path, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _problem(path, f"a JSON object is expected, got {type(data).__name__}")
    if isinstance(data.get("format_version"), int) and data["format_version"] > FORMAT_VERSION:
        raise ModelError(
            f"{path} has format {data['format_version']}, written by a newer sentiment-lab (this one reads "
            f"format {FORMAT_VERSION}); upgrade sentiment-lab"
        )
    try:
        return ModelSidecar.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        raise _problem(path, f"'{where}': {e['msg']}, got {e.get('input')!r}") from None


def write_sidecar(model_dir: str | Path, sidecar: ModelSidecar) -> None:
    """Write the sidecar atomically (format 1)."""
    write_json_atomic(Path(model_dir) / SIDECAR_FILE, sidecar.model_dump(mode="json"))


def update_sidecar(model_dir: str | Path, tokenizer: Any | None = None, **changes: Any) -> ModelSidecar:
    """Read the sidecar (or the plain-folder one), change some fields, validate and write it back."""
    current = read_sidecar(model_dir, tokenizer)
    try:
        updated = ModelSidecar.model_validate(current.model_dump() | changes)
    except ValidationError as err:
        e = err.errors()[0]
        raise ModelError(f"cannot store {'.'.join(map(str, e['loc']))}={e.get('input')!r}: {e['msg']}") from None
    write_sidecar(model_dir, updated)
    return updated
