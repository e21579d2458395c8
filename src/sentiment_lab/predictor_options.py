"""PredictorOptions: how a model folder is loaded and run for prediction, as one validated object.

The CLI (`predict`, `serve`, `bench`), the server and the benchmarks build it and pass it along unchanged to
`Predictor.load`, so a new option is one field here, its flag in `cli/parsers.py` (same name as the field) and
its use in `Predictor.load`. This module imports no torch, so the CLI can offer the choices in --help at once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sentiment_lab.errors import ConfigError
from sentiment_lab.precision import PrecisionName

Backend = Literal["torch", "onnx"]
LongTextMode = Literal["truncate", "chunk"]
StrictInt = Annotated[int, Field(strict=True)]
StrictBool = Annotated[bool, Field(strict=True)]


class PredictorOptions(BaseModel):
    """How a model folder is loaded and run for prediction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Backend = Field("torch", description="torch weights, or ONNX Runtime (needs export)")
    quantized: StrictBool = Field(False, description="onnx backend: the INT8 model (model.int8.onnx)")
    batch_size: StrictInt = Field(32, ge=1, description="texts per forward pass")
    long_text: LongTextMode | None = Field(
        None,
        description="truncate as in training, or average the logits of overlapping windows (default: the model's "
        "own, chunk for a model trained with tokenization.long_text: chunk, else truncate)",
    )
    stride: StrictInt | None = Field(None, ge=0, description="chunk mode: ids shared by neighbouring windows")
    review_threshold: float | None = Field(
        None, ge=0.0, le=1.0, strict=True, description="needs_review below it; default the model's calibrated one"
    )
    threads: StrictInt | None = Field(None, ge=1, description="ONNX Runtime intra-op threads (default torch's)")
    allow_pickle: StrictBool = Field(False, description="load .bin pickle weights (trusted sources only)")
    precision: PrecisionName = Field("auto", description="torch backend weights and compute (precision.resolve)")
    device: str | None = Field(None, description="torch backend device (default: cuda when available, else cpu)")
    compile: StrictBool = Field(False, description="torch backend through torch.compile (tens of seconds at load)")

    @model_validator(mode="after")
    def _combinations(self) -> PredictorOptions:
        if self.compile and self.backend != "torch":
            raise ValueError("compile=True needs backend='torch' (ONNX Runtime optimises its own graph)")
        if self.quantized and self.backend != "onnx":
            raise ValueError("quantized=True needs backend='onnx' (the INT8 model is an ONNX file)")
        return self

    @classmethod
    def build(cls, **values: Any) -> PredictorOptions:
        """Options from keyword values (None means the default); ConfigError naming each bad value and the fix."""
        try:
            return cls(**{k: v for k, v in values.items() if v is not None})
        except ValidationError as err:
            problems = []
            for e in err.errors():
                where = ".".join(str(p) for p in e["loc"])
                if e["type"] == "extra_forbidden":
                    problems.append(
                        f"unknown predictor option {where!r}; the options are {', '.join(cls.model_fields)}"
                    )
                elif e["type"] == "literal_error":
                    problems.append(f"unknown {where} {e.get('input')!r}: {e['msg'].lower()}")
                else:
                    problems.append(
                        f"{where or 'options'}: {e['msg'].removeprefix('Value error, ')} (got {e.get('input')!r})"
                    )
            raise ConfigError("; ".join(problems)) from None
