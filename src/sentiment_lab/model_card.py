"""The model card: README.md of a saved model folder, built with `huggingface_hub` (`ModelCard`, `ModelCardData`).

The front matter follows the Hub's model card metadata (https://huggingface.co/docs/hub/model-cards):
`base_model` is a Hub id (the Hub rejects an alias such as `minilm-l6` or a local path), `license` the base
model's, `datasets` a Hub dataset id, and the test (and validation) accuracy and F1 go into `model-index` as
`EvalResult`s. The body is a Jinja template rendered by `ModelCard.from_template`. Nothing here touches the network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from sentiment_lab import __version__
from sentiment_lab.config import DataConfig, ExperimentConfig
from sentiment_lab.io import write_text_atomic
from sentiment_lab.modeling import ALIASES, ID2LABEL, MINILM_HUB_ID, resolve_model_name

IMDB_HUB_ID = "stanfordnlp/imdb"
# The licenses the base models' Hub pages state; the org-prefixed ids are the same repositories renamed.
BASE_MODEL_LICENSES = {
    MINILM_HUB_ID: "apache-2.0",
    ALIASES["distilbert"]: "apache-2.0",
    "distilbert/distilbert-base-uncased": "apache-2.0",
    ALIASES["bert-base"]: "apache-2.0",
    "google-bert/bert-base-uncased": "apache-2.0",
    ALIASES["roberta-base"]: "mit",
}

CARD_TEMPLATE = """---
{{ card_data }}
---
{%- if labels | length == 2 %}

# {{ name }}: binary sentiment classifier

A text classifier that labels an English movie review {{ labels | join(" or ") }} ({{ label_ids }}),
{%- else %}

# {{ name }}: {{ labels | length }}-class sentiment classifier

A text classifier that labels an English text as one of {{ labels | length }}{{ " ordered" if ordinal else "" }}
classes ({{ label_ids }}),
{%- endif %}
fine-tuned on {{ data_description }} from {{ base_description }}.

## How to use

This is a standard Hugging Face model folder: plain `transformers` loads it.

```python
from transformers import pipeline

clf = pipeline("text-classification", model="path/to/this/folder")  # or its Hub repo id
clf("A wonderful, moving film.", truncation=True, max_length={{ max_length }})
```

Pass `truncation=True`: without it a review longer than the model's maximum input length raises an error.

## Data

Trained on {{ data_description }}: {{ sizes.train }} training reviews, {{ split_text }}.
{%- if preprocessing %}
Before tokenizing, reviews were {{ preprocessing }}; plain `pipeline` does not do that.
{%- endif %}

Each review is cut to {{ max_length }} tokens, keeping {{ truncation_text }} (truncation `{{ truncation }}`).
`sentiment_lab.json` beside the weights stores these settings, and sentiment-lab's `predict` and `serve` apply
them. Plain `pipeline` with `truncation=True` keeps the head only
{%- if truncation != "head" %}, so it does not cut long reviews as training did{% endif %}.

## Training

| setting | value |
|---|---|
{%- for setting, value in training_rows %}
| {{ setting }} | {{ value }} |
{%- endfor %}

## Test metrics

| split | accuracy | F1 | precision | recall | reviews |
|---|---|---|---|---|---|
{%- for row in result_rows %}
| {{ row | join(" | ") }} |
{%- endfor %}
{%- if labels | length == 2 %}

F1, precision and recall are those of the {{ labels[-1] }} class.
{%- else %}

F1, precision and recall are macro averages: the mean over the {{ labels | length }} classes, each weighing the same.
{%- if class_rows %}

Per class (test):

| class | precision | recall | F1 | reviews |
|---|---|---|---|---|
{%- for row in class_rows %}
| {{ row | join(" | ") }} |
{%- endfor %}
{%- endif %}
{%- if ordinal_row %}

The classes are ordered: predictions are on average {{ ordinal_row[0] }} classes off (MAE), and {{ ordinal_row[1] }} of
them at most one class away.
{%- endif %}
{%- endif %}
{%- if baseline_rows %}

Baselines fitted on the same training reviews, scored on the same test reviews:

| baseline | test accuracy | test F1 |
|---|---|---|
{%- for row in baseline_rows %}
| {{ row | join(" | ") }} |
{%- endfor %}
{%- endif %}

## Intended use
{%- if labels | length == 2 %}

Sorting English movie reviews, text like the training data ({{ data_name }}), into {{ labels | join(" and ") }}:
for example to summarise how a film was received, or to study review text.
{%- else %}

Sorting English text like the training data ({{ data_name }}) into {{ labels | join(", ") }}.
{%- endif %}

## Limitations
{% if labels | length == 2 %}
- Binary only: mixed or neutral reviews still get {{ labels | join(" or ") }}.
{%- else %}
- Every text gets one of these {{ labels | length }} classes, even one that fits none of them.
{%- endif %}
- Trained on {{ data_name }} only; other domains (product reviews, tweets, news) and other languages are out of
  domain, and accuracy there is unknown.
- Reviews longer than {{ max_length }} tokens are truncated; what is cut away is not read.
- Sarcasm, irony, and negation spread over a long review are common errors.
- Not for decisions about people (hiring, moderation of individuals, credit, health): it was neither built nor
  evaluated for that.

Trained with sentiment-lab {{ version }}.
"""


def _is_hub_id(name: str) -> bool:
    """True for a string shaped like a Hub repo id (`owner/name` or `name`) that is not an existing local path."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not Path(name).exists()


def _hub_id_in_config(folder: Path) -> str | None:
    # transformers 4 saved the id a model was loaded from as `_name_or_path`; transformers 5 no longer saves it.
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = config.get("_name_or_path") if isinstance(config, dict) else None
    return name if isinstance(name, str) and _is_hub_id(name) else None


def base_model_hub_id(name: str) -> str | None:
    """The Hub id of the base model a `model.name` value stands for; None when there is none (a local folder).

    Aliases map to their Hub ids and a Hub id stays as it is; a local folder gives the `_name_or_path` of its
    config.json when that is a Hub id. Never a filesystem path.
    """
    if name == "minilm-l6":
        return MINILM_HUB_ID
    if name in ALIASES:
        return ALIASES[name]
    path = Path(name)
    if not path.exists():
        return name if _is_hub_id(name) else None
    if not path.is_dir():
        return None
    packaged_minilm = Path(resolve_model_name("minilm-l6"))
    if packaged_minilm.is_dir() and packaged_minilm.resolve() == path.resolve():
        return MINILM_HUB_ID  # its config.json names nreimers/MiniLM-L6-H384-uncased, the model before tuning
    return _hub_id_in_config(path)


def _dataset_hub_id(data: DataConfig) -> str | None:
    """The Hub id of the training data: IMDb (a local copy too), the configured Hub dataset, else None."""
    if data.source == "imdb":
        return IMDB_HUB_ID
    return data.hub_id if data.source == "hub" and not data.reads_local else None


def _data_name(data: DataConfig, dataset_id: str | None) -> str:
    """A plain name for the training data: IMDb, the Hub dataset id, or the local files' names."""
    if dataset_id == IMDB_HUB_ID:
        return "IMDb"
    if dataset_id:
        return dataset_id
    # Names, not paths: a card should not publish where the files lived.
    if data.train_file and data.test_file:
        return f"local files {Path(data.train_file).name} and {Path(data.test_file).name}"
    return f"local files in a folder named {Path(data.path).name}" if data.path else "local files"


def _data_description(data: DataConfig, dataset_id: str | None) -> str:
    if dataset_id == IMDB_HUB_ID:
        return f"the IMDb movie reviews ([`{IMDB_HUB_ID}`](https://huggingface.co/datasets/{IMDB_HUB_ID}))"
    if dataset_id:
        return f"[`{dataset_id}`](https://huggingface.co/datasets/{dataset_id})"
    return _data_name(data, None)


def _eval_results(
    metrics: dict[str, Any], dataset_id: str | None, dataset_name: str, pooled: bool = False
) -> list[EvalResult] | None:
    # The validation reviews are held out of the train split, so they are reported as that split; a pooled re-split
    # draws both from train + test together, so neither is a split of the dataset's own. The number of reviews is in
    # each name: a quick run scores a sample of the test split, not all of it.
    results = []
    splits = (("test", "pooled", "Test"), ("val", "pooled", "Validation")) if pooled else None
    for key, split, label in splits or (("test", "test", "Test"), ("val", "train", "Validation")):
        if key not in metrics:
            continue
        n = metrics[key].get("n", metrics.get("data", {}).get(key))
        reviews = f" ({n} reviews)" if n is not None else ""
        for metric_type, metric_label in (("accuracy", "accuracy"), ("f1", "F1")):
            results.append(
                EvalResult(
                    task_type="text-classification",
                    task_name="Sentiment Analysis",
                    dataset_type=dataset_id or "unknown",  # SetFit's convention for data not on the Hub
                    dataset_name=dataset_name,
                    dataset_split=split,
                    metric_type=metric_type,
                    metric_value=float(metrics[key][metric_type]),
                    metric_name=f"{label} {metric_label}{reviews}",
                )
            )
    return results or None


def _split_text(data: DataConfig, sizes: dict[str, int]) -> str:
    """How the validation and test reviews were split off, as the run's data config did it."""
    seed = data.split_seed
    if data.split == "pooled":
        shares = "/".join(f"{100 * f:g}" for f in data.pooled_fractions)
        return (
            f"{sizes['val']} validation and {sizes['test']} test reviews (the train and test splits pooled and "
            f"re-split {shares}, stratified, seed {seed}; so the test reviews are not the dataset's own test split)"
        )
    if not data.has_validation_split:
        return (
            f"no validation split (the whole train split trained on; the last epoch's model is kept) and "
            f"{sizes['test']} test reviews"
        )
    return (
        f"{sizes['val']} validation reviews ({data.val_fraction * 100:g}% of the train split held out, stratified, "
        f"seed {seed}) and {sizes['test']} test reviews"
    )


def _truncation_text(cfg: ExperimentConfig) -> str:
    t = cfg.tokenization
    if t.truncation == "head":
        return "the first tokens of each review"
    if t.truncation == "tail":
        return "the last tokens of each review"
    budget = t.max_length - 2  # [CLS] ... [SEP] or <s> ... </s>, as in the encoders sentiment-lab knows
    head = budget // 4 if t.head_tokens is None else min(t.head_tokens, budget)
    return f"the first {head} and the last {budget - head} tokens of each review"


def _training_rows(cfg: ExperimentConfig, metrics: dict[str, Any]) -> list[tuple[str, Any]]:
    t, m = cfg.training, cfg.model
    warmup = f"{t.warmup_ratio} of the steps" if t.warmup_ratio is not None else f"{t.warmup_steps} steps"
    batch = f"{t.batch_size} x {t.gradient_accumulation_steps} accumulation steps"
    rows: list[tuple[str, Any]] = [
        ("learning rate", f"{t.learning_rate} ({t.lr_scheduler} schedule, warmup {warmup})"),
        ("batch size", batch if t.gradient_accumulation_steps > 1 else t.batch_size),
        ("steps", t.max_steps) if t.max_steps > 0 else ("epochs", t.epochs),
        ("weight decay", t.weight_decay),
    ]
    if m.llrd is not None:
        rows.append(("layer-wise LR decay", m.llrd))
    frozen = ["embeddings"] * m.freeze_embeddings + [f"{m.freeze_layers} layers"] * bool(m.freeze_layers)
    if frozen:
        rows.append(("frozen", ", ".join(frozen)))
    if m.lora is not None:  # model.lora: these weights are the base model's with the trained adapter merged in
        lora = metrics.get("lora") or {}
        targets = lora.get("target_modules") or m.lora.target_modules  # metrics has `auto` resolved
        targets = ", ".join(targets) if isinstance(targets, list) else targets
        rows.append(
            (
                "LoRA",
                f"r {m.lora.r}, alpha {m.lora.alpha}, dropout {m.lora.dropout} on {targets}, head trained in full; "
                "merged into these weights (the adapter alone is in adapter/)",
            )
        )
    rows += [("precision", metrics.get("precision", t.precision)), ("seed", t.seed)]
    if metrics.get("best_step"):
        kept = f"{metrics['best_step']} of {metrics.get('global_step', '?')}"
        rows.append(("best step", f"{kept} (kept by validation {t.metric_for_best_model})"))
    return rows


def _score(split_metrics: dict[str, Any], key: str) -> str:
    value = split_metrics.get(key)
    return f"{value:.4f}" if isinstance(value, int | float) else ""


def build_model_card(cfg: ExperimentConfig, metrics: dict[str, Any], labels: list[str] | None = None) -> ModelCard:
    """The model card of a trained run: Hub metadata in the front matter; data, training and results below.

    metrics: the run's metrics.json content (`test`, `val`, `data`, `precision`, optional `baselines`).
    labels: class names by index, as the saved model's id2label; default `metrics["labels"]` or NEGATIVE/POSITIVE.
    """
    labels = list(labels or metrics.get("labels") or ID2LABEL.values())
    base_model = base_model_hub_id(cfg.model.name)
    dataset_id = _dataset_hub_id(cfg.data)
    data_name = _data_name(cfg.data, dataset_id)
    card_data = ModelCardData(
        language="en" if dataset_id == IMDB_HUB_ID else None,
        license=BASE_MODEL_LICENSES.get(base_model or ""),
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["sentiment-analysis", "sentiment-lab"],
        base_model=base_model,
        datasets=[dataset_id] if dataset_id else None,
        metrics=["accuracy", "f1"],
        model_name=cfg.name,
        eval_results=_eval_results(metrics, dataset_id, data_name, pooled=cfg.data.split == "pooled"),
    )
    if base_model:
        base_description = f"[`{base_model}`](https://huggingface.co/{base_model})"
    else:
        base_description = f"a base model in a local folder (`{Path(cfg.model.name).name}`) with no Hub id"
    preprocessing = ["lowercased"] * cfg.data.lowercase + ["stripped of `<br />` tags"] * cfg.data.strip_html
    result_rows = [
        [name, *(_score(metrics[key], k) for k in ("accuracy", "f1", "precision", "recall")), metrics[key].get("n", "")]
        for key, name in (("test", "test"), ("val", "validation"))
        if key in metrics
    ]
    baseline_rows = [
        [name, _score(b["test"], "accuracy"), _score(b["test"], "f1")]
        for name, b in (metrics.get("baselines") or {}).items()
        if "test" in b
    ]
    test = metrics.get("test") or {}
    class_rows = [
        [name, _score(c, "precision"), _score(c, "recall"), _score(c, "f1"), c.get("support", "")]
        for name, c in (test.get("per_class") or {}).items()
    ]
    ordinal_row = [_score(test, "mae"), _score(test, "within_one")] if "mae" in test else None
    return ModelCard.from_template(
        card_data,
        class_rows=class_rows if len(labels) > 2 else [],
        ordinal_row=ordinal_row,
        ordinal=cfg.data.ordinal,
        template_str=CARD_TEMPLATE,
        name=cfg.name,
        labels=labels,
        label_ids=", ".join(f"{i}: {label}" for i, label in enumerate(labels)),
        base_description=base_description,
        data_description=_data_description(cfg.data, dataset_id),
        data_name=data_name,
        sizes=metrics["data"],
        split_text=_split_text(cfg.data, metrics["data"]),
        preprocessing=" and ".join(preprocessing),
        max_length=cfg.tokenization.max_length,
        truncation=cfg.tokenization.truncation,
        truncation_text=_truncation_text(cfg),
        training_rows=_training_rows(cfg, metrics),
        result_rows=result_rows,
        baseline_rows=baseline_rows,
        version=__version__,
    )


def _saved_labels(model_dir: Path) -> list[str] | None:
    """The class names of a saved model folder's id2label, by index; None when it has none."""
    try:
        id2label = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["id2label"]
        return [str(id2label[str(i)]) for i in range(len(id2label))]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_model_card(model_dir: Path, cfg: ExperimentConfig, metrics: dict[str, Any]) -> None:
    """Write MODEL_DIR/README.md atomically; the labels are the saved model's id2label when it has one."""
    card = build_model_card(cfg, metrics, labels=_saved_labels(Path(model_dir)))
    write_text_atomic(Path(model_dir) / "README.md", str(card))
