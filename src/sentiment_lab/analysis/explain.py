"""Explanations of single predictions: integrated-gradients token attributions (Captum) and [CLS] attention.

Integrated gradients (Sundararajan et al., 2017) integrates the gradient of the target class's log-odds
(by default the predicted class; log p / (1 - p) = its logit minus the log-sum-exp of the others' logits, which
for two classes is the logit of the class minus the other's: all a binary softmax depends on) along a straight
path in word embedding space from a baseline to the input. The baseline replaces every word by one special token
([PAD], [UNK] or [MASK], special tokens kept): of those, the one whose log-odds is nearest that of a uniform
prediction (zero for two classes), because a baseline should carry no evidence (MiniLM reads all-[PAD] as 95%
positive, which would hide the evidence of any positive prediction). The attributions sum to
log-odds(input) - log-odds(baseline); `delta` is the remaining gap.
The attention view is the attention paid by the first token ([CLS]) to every token, averaged over heads, per layer.
Both are read as the model's evidence for one prediction, not as ground truth about language.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentiment_lab.errors import InputError, ModelError
from sentiment_lab.io import write_json_atomic, write_text_atomic
from sentiment_lab.modeling import load_classifier, load_tokenizer
from sentiment_lab.rendering import embed_png, pyplot, render_template, save_figure
from sentiment_lab.rundir import locate_model
from sentiment_lab.sidecar import TextSettings, read_sidecar
from sentiment_lab.tokenization import chunking, encode_texts, window_starts

DEFAULT_IG_STEPS = 20
COMPLETENESS_TOLERANCE = 0.05  # refine IG until attributions explain 95% of the log-odds change
MAX_IG_BATCH = 40  # interpolation points per forward/backward pass (bounds memory for long reviews)
SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>"})
HEATMAP_MAX_TOKENS = 48  # a readable heatmap: beyond this only the most-attended tokens are drawn


@dataclass
class Explanation:
    """One review's prediction, token attributions and [CLS] attention (layers x tokens)."""

    text: str
    tokens: list[str]
    attributions: np.ndarray  # (tokens,) IG attribution toward the target class (default the predicted one)
    cls_attention: np.ndarray  # (layers, tokens)
    pred: int
    prob_pos: float | None  # probability of class 1 (POSITIVE) for a binary model; None for K > 2
    label_names: list[str]
    delta: float  # IG completeness gap: |sum(attributions) - (log-odds(input) - log-odds(baseline))|
    label: int | None = None
    ig_steps: int = 0  # steps actually used (doubled for hard paths)
    baseline_token: str = ""
    baseline_prob_pos: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    target: int | None = None  # the class the attributions point toward; None: the predicted class
    probs: np.ndarray | None = None  # (classes,) probabilities of the input

    @property
    def target_class(self) -> int:
        """The class the attributions point toward."""
        return self.pred if self.target is None else self.target

    @property
    def confidence(self) -> float:
        """Top-label probability."""
        if self.prob_pos is not None:
            return max(self.prob_pos, 1 - self.prob_pos)
        return float(np.max(self.probs))

    def top_tokens(self, k: int = 8) -> dict[str, list[tuple[str, float]]]:
        """The k words pushing hardest toward and against the predicted class."""
        words, scores = merge_wordpieces(self.tokens, self.attributions)
        order = np.argsort(scores)
        return {
            "for": [(words[i], float(scores[i])) for i in order[::-1][:k] if scores[i] > 0],
            "against": [(words[i], float(scores[i])) for i in order[:k] if scores[i] < 0],
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (no per-layer arrays)."""
        return {
            "text": self.text,
            "label": self.label,
            "pred": self.pred,
            "pred_name": self.label_names[self.pred],
            "target": self.target_class,
            "target_name": self.label_names[self.target_class],
            "target_prob": float(self.probs[self.target_class]) if self.probs is not None else None,
            "prob_pos": self.prob_pos,
            "confidence": self.confidence,
            "ig_delta": self.delta,
            "ig_steps": self.ig_steps,
            "baseline_token": self.baseline_token,
            "baseline_prob_pos": self.baseline_prob_pos,
            "log_odds_explained": float(self.attributions.sum()),
            "n_tokens": len(self.tokens),
            "top_tokens": self.top_tokens(),
            **self.meta,
        }


def load_for_explanation(model_dir: str | Path) -> tuple[Any, Any, TextSettings]:
    """The classifier, its tokenizer and the text settings it was trained with."""
    folder, _ = locate_model(model_dir)
    tokenizer = load_tokenizer(str(folder))
    return load_classifier(folder), tokenizer, read_sidecar(folder, tokenizer).text


def resolve_target(target: str | int | None, label_names: list[str]) -> int | None:
    """The class id of `target` (a class name, case-insensitive, or an id), None for None; else one InputError."""
    if target is None:
        return None
    names = [str(n).upper() for n in label_names]
    if isinstance(target, bool):  # a JSON true is not a class id
        target = str(target)
    if isinstance(target, str) and target.strip().isdigit():
        target = int(target.strip())
    if isinstance(target, int) and 0 <= target < len(names):
        return target
    if isinstance(target, str) and target.strip().upper() in names:
        return names.index(target.strip().upper())
    classes = ", ".join(f"{i} {n}" for i, n in enumerate(label_names))
    raise InputError(
        f"class {target!r} is not one of this model's {len(names)} classes ({classes}); give one of those names or "
        "ids as the target, or none to explain the predicted class"
    )


def forward_with_attention(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: int
) -> tuple[torch.Tensor, np.ndarray]:
    """(logits of every row, [CLS] attention (rows, layers, tokens) of the first `rows` rows, mean over heads).

    The rows enter through the word embeddings, as integrated gradients' path does, so the logits are those of
    the function being integrated: from ids, RoBERTa numbers positions skipping its padding token, so a
    [PAD]-filled baseline would sit at other positions than on the path and the attributions would no longer
    sum to the log-odds change (measured on a tiny RoBERTa: a gap 4x the attributions' sum).
    Fused SDPA kernels return no attention weights, so this forward pass runs the eager implementation,
    which computes the same outputs; the model's own implementation is restored afterwards.
    """
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            embeds = model.get_input_embeddings()(input_ids)
            res = model(inputs_embeds=embeds, attention_mask=attention_mask, output_attentions=True)
    finally:
        model.set_attn_implementation(previous)
    att = torch.stack([a[:rows, :, 0, :].float().mean(1) for a in res.attentions], dim=1).cpu().numpy()
    return res.logits.float(), att


def explanation_inputs(
    tokenizer: Any, texts: list[str], settings: TextSettings
) -> list[tuple[list[int], list[list[int]], np.ndarray]]:
    """Per text: the ids shown, the model's input rows, and for each row the shown position of each of its ids.

    truncate: one row, cut exactly as in training, shown as it is. chunk: every window the Predictor scores (its
    default stride; their logits are averaged into the prediction), shown as the whole text, each window's [CLS]
    and [SEP] on the text's own; a token two windows share gets both windows' attributions.
    """
    if settings.long_text == "truncate":
        return [
            (ids, [ids], np.arange(len(ids))[None, :]) for ids in encode_texts(tokenizer, texts, settings)["input_ids"]
        ]
    cut = chunking(tokenizer, texts, settings)
    prefix, suffix = cut.prefix, cut.suffix
    out = []
    for bare in cut.ids:
        end = len(prefix) + len(bare)
        rows, positions = [], []
        for start in window_starts(len(bare), cut.budget, cut.overlap):
            window = bare[start : start + cut.budget]
            rows.append(prefix + window + suffix)
            at = len(prefix) + start
            positions.append([*range(len(prefix)), *range(at, at + len(window)), *range(end, end + len(suffix))])
        out.append((prefix + bare + suffix, rows, np.asarray(positions)))
    return out


def onto_text(values: np.ndarray, positions: np.ndarray, n: int) -> np.ndarray:
    """Windows' per-token values (windows, ..., tokens) summed onto the n shown positions."""
    out = np.zeros((*values.shape[1:-1], n))
    for row, where in zip(values, positions, strict=True):
        np.add.at(out, (..., where), row)
    return out


def explain_texts(
    model: Any,
    tokenizer: Any,
    settings: TextSettings,
    texts: list[str],
    n_steps: int = DEFAULT_IG_STEPS,
    labels: list[int | None] | None = None,
    target: str | int | None = None,
) -> list[Explanation]:
    """Integrated gradients and [CLS] attention for each text, as the model reads it: truncated exactly as in
    training, or for a chunk-mode model every window (the attributions of the averaged prediction, on the whole text).

    target: the class whose evidence is attributed (name or id, same for every text); None: each text's predicted
    class. A class the model does not have raises InputError naming its classes.
    """
    from captum.attr import IntegratedGradients  # lazy: captum adds about half a second at import

    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise InputError(f"text {i} is empty or not a string; give the review's text to explain")
    if n_steps < 2:
        raise InputError(f"integrated gradients needs at least 2 steps, got {n_steps}")
    model.eval()
    device = next(model.parameters()).device
    inputs = explanation_inputs(tokenizer, texts, settings)
    special = set(tokenizer.all_special_ids)
    num_labels = int(model.config.num_labels)
    if num_labels < 2:
        raise ModelError(f"the model has {num_labels} label; explanations need a classifier of at least 2 classes")
    label_names = [str(model.config.id2label.get(i, i)) for i in range(num_labels)]
    target_id = resolve_target(target, label_names)
    neutral = -float(np.log(num_labels - 1))  # the log-odds of any class under a uniform prediction
    word_embeddings = model.get_input_embeddings()

    def class_log_odds(logits: torch.Tensor, cls: int) -> torch.Tensor:
        if num_labels == 2:  # the exact binary form: the logit difference
            return logits[:, cls] - logits[:, 1 - cls]
        others = torch.cat([logits[:, :cls], logits[:, cls + 1 :]], dim=1)
        return logits[:, cls] - torch.logsumexp(others, dim=1)

    def log_odds(inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, cls: int) -> torch.Tensor:
        # (points, windows, tokens, dim): each point's windows are scored and their logits averaged, as the
        # Predictor does; the model adds position (and type) embeddings itself, identical for input and baseline
        points, windows = inputs_embeds.shape[:2]
        flat = inputs_embeds.reshape(points * windows, *inputs_embeds.shape[2:])
        logits = model(inputs_embeds=flat, attention_mask=attention_mask[:1].expand(len(flat), -1)).logits  # no padding
        return class_log_odds(logits.view(points, windows, -1).mean(1), cls)

    ig = IntegratedGradients(log_odds)
    fillers = [
        (name, tid)
        for name, tid in (
            (tokenizer.pad_token, tokenizer.pad_token_id),
            (tokenizer.unk_token, tokenizer.unk_token_id),
            (tokenizer.mask_token, tokenizer.mask_token_id),
        )
        if tid is not None
    ]
    out = []
    for i, (shown, windows, positions) in enumerate(inputs):
        rows = [*windows, *([t if t in special else tid for t in w] for _, tid in fillers for w in windows)]
        batch = torch.tensor(rows, device=device)
        n_windows = len(windows)
        mask = torch.ones_like(batch[:1])
        # one pass: the prediction, every candidate baseline's logits, and the input's attention
        row_logits, window_att = forward_with_attention(model, batch, mask.expand(len(rows), -1), n_windows)
        logits = row_logits.view(1 + len(fillers), n_windows, -1).mean(1)  # input, then each candidate baseline
        pred = int(logits[0].argmax())
        cls = pred if target_id is None else target_id
        odds = class_log_odds(logits, cls)
        k = 1 + int((odds[1:] - neutral).abs().argmin())  # the most neutral baseline
        with torch.no_grad():
            embeds = word_embeddings(batch.view(1 + len(fillers), n_windows, -1)[[0, k]])
        target = float(odds[0] - odds[k])
        # A sharply curved path needs more steps: double them (at most twice) until the attributions account for
        # all but 5% of the log-odds change.
        steps = n_steps
        for attempt in range(3):
            attr = ig.attribute(
                embeds[:1],
                baselines=embeds[1:],
                additional_forward_args=(mask, cls),
                n_steps=steps,
                internal_batch_size=max(1, min(steps, MAX_IG_BATCH // n_windows)),
            )
            window_scores = attr.sum(dim=-1)[0].detach().float().cpu().numpy()
            scores = onto_text(window_scores, positions, len(shown))  # summed: the total stays the change
            delta = abs(float(scores.sum()) - target)
            if delta <= max(COMPLETENESS_TOLERANCE * abs(target), 1e-3) or attempt == 2:
                break
            steps *= 2
        probs = torch.softmax(logits, -1)
        binary = num_labels == 2
        out.append(
            Explanation(
                text=texts[i],
                tokens=tokenizer.convert_ids_to_tokens(shown),
                attributions=scores,
                # each window's [CLS] attention weighs 1/windows, as its logits do in the prediction: rows sum to 1
                cls_attention=onto_text(window_att, positions, len(shown)) / n_windows,
                pred=pred,
                prob_pos=float(probs[0, 1]) if binary else None,
                label_names=label_names,
                delta=delta,
                ig_steps=steps,
                label=None if labels is None else labels[i],
                baseline_token=fillers[k - 1][0],
                baseline_prob_pos=float(probs[k, 1]) if binary else None,
                target=target_id,
                probs=probs[0].cpu().numpy(),
                meta={"windows": n_windows} if settings.long_text == "chunk" else {},
            )
        )
    return out


def merge_wordpieces(tokens: list[str], scores: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Join sub-word pieces into words (WordPiece `##x`; BPE/SentencePiece `Ġ`/`▁` word starts), summing scores."""
    bpe = any(t.startswith(("Ġ", "▁")) for t in tokens)
    words: list[str] = []
    merged: list[float] = []
    prev_special = True
    for tok, s in zip(tokens, scores, strict=True):
        special = tok in SPECIAL_TOKENS
        if bpe:
            new_word = special or prev_special or tok.startswith(("Ġ", "▁"))
        else:
            new_word = special or prev_special or not tok.startswith("##")
        piece = tok if special else tok.lstrip("Ġ▁") if bpe else tok.removeprefix("##")
        if new_word:
            words.append(piece)
            merged.append(float(s))
        else:
            words[-1] += piece
            merged[-1] += float(s)
        prev_special = special
    return words, np.asarray(merged)


def highlighted_html(explanation: Explanation) -> str:
    """The review as HTML spans: green pushes toward the predicted class, red against, opacity by strength."""
    words, scores = merge_wordpieces(explanation.tokens, explanation.attributions)
    scale = float(np.abs(scores).max()) or 1.0
    spans = []
    for w, s in zip(words, scores, strict=True):
        if w in SPECIAL_TOKENS:
            continue
        alpha = min(1.0, abs(s) / scale)
        rgb = "22,163,74" if s > 0 else "220,38,38"
        spans.append(
            f'<span class="tok" style="background: rgba({rgb},{alpha:.2f})" title="{s:+.3f}">{html.escape(w)}</span>'
        )
    return " ".join(spans)


def attention_heatmap(explanation: Explanation, path: str | Path, title: str | None = None) -> Path:
    """PNG of [CLS] attention per layer (rows) and token (columns), mean over heads."""
    plt = pyplot()
    att = explanation.cls_attention
    tokens = list(explanation.tokens)
    # [CLS] attending to itself dwarfs every other cell (often > 0.8), so its column is left out
    cols = np.arange(1, len(tokens))
    note = " ([CLS] itself omitted)"
    if len(cols) > HEATMAP_MAX_TOKENS:
        # keep the most-attended tokens (max over layers), in reading order
        strength = att[:, 1:].max(axis=0)
        cols = 1 + np.sort(np.argsort(-strength)[:HEATMAP_MAX_TOKENS])
        note = f" ({HEATMAP_MAX_TOKENS} most-attended of {len(tokens)} tokens in text order; [CLS] omitted)"
    sub = att[:, cols]
    width = max(6.0, 0.22 * len(cols) + 2.0)
    fig, ax = plt.subplots(figsize=(width, 1.0 + 0.45 * att.shape[0]))
    im = ax.imshow(sub, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([tokens[c] for c in cols], rotation=90, fontsize=8)
    ax.set_yticks(range(att.shape[0]))
    ax.set_yticklabels([f"layer {i + 1}" for i in range(att.shape[0])], fontsize=8)
    ax.set_xlabel("token" + note, fontsize=9)
    ax.set_title(title or "[CLS] attention per token, mean over heads", fontsize=10)
    fig.colorbar(im, ax=ax, label="attention weight", fraction=0.03, pad=0.01)
    fig.tight_layout()
    return save_figure(fig, path)


def explain(
    model_dir: str | Path,
    texts: list[str],
    out_dir: str | Path,
    n_steps: int = DEFAULT_IG_STEPS,
    target: str | int | None = None,
) -> dict[str, Any]:
    """Explain texts with a saved model: writes explanation.html, explanation.json and one heatmap PNG per text.

    target: the class to explain (name or id); None: each text's predicted class.
    """
    model, tokenizer, settings = load_for_explanation(model_dir)
    exps = explain_texts(model, tokenizer, settings, texts, n_steps, target=target)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for i, e in enumerate(exps):
        png = attention_heatmap(e, out / f"attention_{i + 1}.png")
        items.append({"exp": e, "summary": e.to_dict(), "html": highlighted_html(e), "png": embed_png(png)})
    page = render_template("explanation.html", model_dir=str(model_dir), items=items, n_steps=n_steps)
    write_text_atomic(out / "explanation.html", page)
    result = {"model_dir": str(model_dir), "ig_steps": n_steps, "explanations": [i["summary"] for i in items]}
    write_json_atomic(out / "explanation.json", result)
    result["out_dir"] = str(out)
    return result
