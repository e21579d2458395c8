"""Explanations for POST /v1/explain and the page's highlights: `model_explainer` wraps a Predictor's model."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from sentiment_lab.analysis.calibration import rescale_prob_pos
from sentiment_lab.analysis.explain import SPECIAL_TOKENS, explain_texts, load_for_explanation, merge_wordpieces
from sentiment_lab.predictor import Predictor
from sentiment_lab.server.schemas import ExplainFn

log = logging.getLogger(__name__)


def model_explainer(predictor: Predictor, n_steps: int = 20) -> ExplainFn | None:
    """An explain function (text, target=None) for the predictor's model folder, or None when not possible
    (no captum, an ONNX-only folder, an ensemble).

    Reuses the predictor's torch model when it is fp32 (the model thread runs one call at a time, so sharing
    it is safe); otherwise (ONNX, or bf16/fp16 weights, too coarse for gradients) it loads the fp32 weights once.
    """
    if importlib.util.find_spec("captum") is None:  # explain_texts imports it lazily: the page shows no highlights
        log.warning("explanations disabled: captum is not installed")
        return None
    if predictor.members:  # integrated gradients follow one model's gradients; an average has none of its own
        log.warning(
            "explanations disabled: %s is an ensemble of %d models; explain a member (sentiment-lab serve MEMBER_RUN)",
            predictor.model_dir,
            len(predictor.members),
        )
        return None
    if predictor.model is not None and predictor.precision == "fp32":
        model, tokenizer, settings = predictor.model, predictor.tokenizer, predictor.settings
    else:
        try:
            model, tokenizer, settings = load_for_explanation(predictor.model_dir)
        except Exception as exc:  # an ONNX-only folder: serving works, explanations do not
            log.warning("explanations disabled: cannot load torch weights from %s: %s", predictor.model_dir, exc)
            return None
    binary = int(model.config.num_labels) == 2
    names = [str(model.config.id2label.get(i, "")).upper() for i in range(2)] if binary else []
    positive = names.index("POSITIVE") if "POSITIVE" in names else 1

    def explain_one(text: str, target: str | int | None = None) -> dict[str, Any]:
        """Word evidence toward `target` (name or id); by default toward POSITIVE (binary) or the predicted class."""
        e = explain_texts(model, tokenizer, settings, [text], n_steps, target=target)[0]
        words, scores = merge_wordpieces(e.tokens, e.attributions)
        # attributions point toward the target class; a binary model without one answers toward POSITIVE
        sign = -1.0 if binary and target is None and e.pred != positive else 1.0
        # The model reads at most max_length tokens (cut as in training); the page says when words are missing.
        truncated = len(tokenizer(text, verbose=False)["input_ids"]) > len(e.tokens)
        return {
            "label": _label_name(predictor, e.label_names, e.pred),
            # temperature-scaled, as /v1/predict reports it for the same text
            "prob_pos": rescale_prob_pos(e.prob_pos, predictor.temperature) if e.prob_pos is not None else None,
            "target": None if binary and target is None else _label_name(predictor, e.label_names, e.target_class),
            "words": [
                {"text": w, "score": sign * float(s)}
                for w, s in zip(words, scores, strict=True)
                if w not in SPECIAL_TOKENS
            ],
            "truncated": truncated,
        }

    return explain_one


def _label_name(predictor: Predictor, model_names: list[str], index: int) -> str:
    """A class's name: the predictor's (as /v1/predict reports it) for K > 2; the model's id2label for a binary
    model, as before."""
    if len(model_names) > 2 and len(predictor.labels) == len(model_names):
        return predictor.labels[index]
    return model_names[index].upper()
