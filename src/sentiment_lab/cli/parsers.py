"""The argument parsers of every command, kept apart from the commands themselves.

Parsing needs no library: `sentiment-lab --help`, a sub-command's --help and argument mistakes answer at once
(0.1 s), while the module that runs a command (core, deploy, experiments, analysis, ensemble, serve) imports the
library, torch and transformers (about 7 s) only when that command runs. `SECTION_OF` says which module runs each
command.
"""

from __future__ import annotations

import argparse
from typing import get_args

from sentiment_lab.precision import PRECISIONS
from sentiment_lab.predictor_options import Backend, LongTextMode

BACKENDS = get_args(Backend)
LONG_TEXT_MODES = get_args(LongTextMode)
SECTION_OF: dict[str, str] = {}  # command -> the cli module whose @command function runs it


def add_config_args(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    if config_required:
        p.add_argument("config", help="experiment YAML (e.g. configs/quickstart.yaml)")
    else:
        p.add_argument("config", nargs="?", help="experiment YAML (default: built-in defaults, IMDb)")
    add_override_args(p)


def add_override_args(p: argparse.ArgumentParser, scope: str = "") -> None:
    """--set KEY=VALUE (repeatable) and --data PATH; scope words the help (e.g. "in every run")."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value{scope}, e.g. --set training.learning_rate=3e-5 (repeatable)",
    )
    p.add_argument("--data", help="data folder or file (replaces data.path; e.g. ../shared/data/imdb)")


def add_allow_pickle_arg(p: argparse.ArgumentParser) -> None:
    """--allow-pickle for commands that load a model folder."""
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load .bin pickle weights when the folder has no safetensors (pickles can run code: trusted sources only)",
    )


def add_precision_arg(p: argparse.ArgumentParser, default: str | None = "auto", what: str = "torch backend") -> None:
    """--precision, with the values of `sentiment_lab.precision`."""
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=default,
        help=f"{what} compute precision (auto: bf16 where the hardware has it natively, fp16 on older CUDA GPUs, "
        "else fp32)",
    )


def add_predictor_args(p: argparse.ArgumentParser) -> None:
    """How `predict` and `serve` load and run a model: the fields of PredictorOptions, one flag each.

    Each flag's dest is its field's name and its default None (the field's own default applies), so
    `common.predictor_options` maps the parsed flags without a list of its own.
    """
    p.add_argument("--backend", choices=BACKENDS, help="runtime: torch (default) or onnx (needs `export`)")
    p.add_argument(
        "--int8", dest="quantized", action="store_true", help="with --backend onnx: the INT8 model (model.int8.onnx)"
    )
    p.add_argument("--batch-size", type=int, help="texts per forward pass (default 32)")
    p.add_argument(
        "--long-text",
        choices=LONG_TEXT_MODES,
        help="truncate as in training, or average the logits of overlapping windows over the whole review "
        "(default: the model's own, chunk for a model trained with tokenization.long_text: chunk)",
    )
    p.add_argument("--stride", type=int, help="chunk mode: tokens shared by neighbouring windows (default: 1/4)")
    p.add_argument(
        "--review-threshold",
        type=float,
        help="needs_review below this confidence (default: the model's calibrated threshold, else 0.70)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch backend: torch.compile with frozen weights (faster single reviews; tens of seconds at start)",
    )
    p.add_argument("--device", help="torch backend device, e.g. cpu, cuda, cuda:1 (default: cuda when available)")
    add_allow_pickle_arg(p)
    add_precision_arg(p, default=None, what="torch backend (default auto)")


def add_core_parsers(sub: argparse._SubParsersAction) -> None:
    """Register train, evaluate, baseline and data."""
    p = sub.add_parser("train", help="fine-tune a model from a YAML config, then evaluate it on the test set")
    add_config_args(p)
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")

    p = sub.add_parser(
        "evaluate",
        help="evaluate a saved model or run folder on the test set (also of another dataset: --data)",
        description="Score a model on a test split: its run's data by default, another dataset with --data (the "
        "run's config with that path, its class settings left behind) or a CONFIG. The data's classes are matched "
        "to the model's by name, ignoring case; where they differ, --label-map says which model class each data "
        "class counts as, and the metrics are computed in the model's classes.",
    )
    p.add_argument("model", metavar="MODEL_OR_RUN_DIR", help="a run, model or ensemble folder")
    add_config_args(p, config_required=False)
    p.add_argument(
        "--label-map",
        metavar="MAP",
        help="DATA_CLASS=MODEL_CLASS pairs, comma-separated, or a JSON object: which model class each data class "
        'counts as (names or ids, any case), e.g. "very negative=negative,negative=negative,neutral=,'
        'positive=positive,very positive=positive". An empty model class (neutral=, JSON null) drops that '
        "class's rows, counted in metrics.json. Classes named alike on both sides need no pair",
    )
    p.add_argument("--out", help="output folder (default: RUN_DIR/evaluation)")
    p.add_argument("--batch-size", type=int, default=64)
    add_precision_arg(p, default=None, what="evaluation (default: the run's training.precision, else auto)")
    add_allow_pickle_arg(p)

    p = sub.add_parser("baseline", help="majority-class and TF-IDF + logistic regression baselines")
    add_config_args(p, config_required=False)
    p.add_argument("--out", help="run folder (default: runs/<config name>-baseline)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")

    p = sub.add_parser("data", help="dataset utilities")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    s = data_sub.add_parser("stats", help="counts, words and tokens per review, share truncated")
    add_config_args(s, config_required=False)
    s.add_argument("--no-tokens", action="store_true", help="skip token counts (no tokenizer needed)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_deploy_parsers(sub: argparse._SubParsersAction) -> None:
    """Register predict, export, bench and push."""
    p = sub.add_parser(
        "predict",
        help="label texts, or a CSV/JSONL/Parquet file, with a saved model",
        description="Label review texts given as arguments (prints a table), or stream a whole file with "
        "--input/--output. Rows with empty or non-text values are skipped and counted.",
    )
    p.add_argument("model", metavar="MODEL_OR_RUN_DIR", help="a run, model or ensemble folder")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="review texts to label")
    p.add_argument(
        "--input",
        help="CSV, JSONL or Parquet file to label (needs --output); with --engine ray also a folder or a glob, "
        "local or any URI pyarrow opens (s3://, gs://, hdfs://)",
    )
    p.add_argument(
        "--output",
        help="predictions file (.csv, .jsonl or .parquet), written atomically; with --engine ray a folder of "
        "Parquet shards",
    )
    p.add_argument("--text-column", default="text", help="column (or JSON key) holding the review text")
    p.add_argument(
        "--chunk-rows", type=int, help="rows read and predicted at a time (default 1024; with --engine ray 256)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_predictor_args(p)
    g = p.add_argument_group('many machines (Ray; pip install "sentiment-lab[ray]")')
    g.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process (default); ray: a pool of Ray workers, each loading the model once",
    )
    g.add_argument(
        "--address",
        help="Ray cluster to join: auto (the cluster of this node) or HOST:6379 (default: start Ray on this machine)",
    )
    g.add_argument("--workers", type=int, help="Ray workers (default: one per node)")
    g.add_argument("--cpus-per-worker", type=int, help="threads of each Ray worker (default: the CPUs / workers)")
    g.add_argument("--overwrite", action="store_true", help="replace an --output folder that holds results")

    p = sub.add_parser(
        "export",
        help="export a model to ONNX (and INT8), checked for parity with torch",
        description="Write MODEL_DIR/onnx/model.onnx (and model.int8.onnx) and parity.json. The export is kept "
        "only if, on N held-out reviews, ONNX fp32 logits match torch within --atol and INT8 labels agree "
        "with torch on at least --min-agreement of them.",
    )
    p.add_argument("model", metavar="MODEL_OR_RUN_DIR")
    p.add_argument("--onnx", action="store_true", help="export to ONNX (the only format so far)")
    p.add_argument("--quantize", choices=("int8",), help="also write a dynamically quantized INT8 model")
    p.add_argument("--n", type=int, default=200, help="held-out reviews of the parity check")
    p.add_argument("--data", help="IMDb folder for the held-out reviews (default: IMDB_DIR; else a built-in list)")
    p.add_argument("--atol", type=float, default=1e-3, help="largest accepted |ONNX - torch| logit difference")
    p.add_argument("--min-agreement", type=float, default=0.99, help="smallest accepted INT8 label agreement")
    p.add_argument(
        "--per-tensor", action="store_true", help="INT8 with one scale per weight tensor (default: per channel)"
    )

    p = sub.add_parser(
        "bench",
        help="throughput and latency of each backend on IMDb test reviews, with accuracy",
        description="Reviews/s at --batch-size and batch-1 latency p50/p95/p99 for torch fp32, onnx fp32 and "
        "onnx int8 (when exported), and accuracy on the same reviews. Writes a JSON file.",
    )
    p.add_argument("model", metavar="MODEL_OR_RUN_DIR")
    p.add_argument("--n", type=int, default=256, help="IMDb test reviews for throughput and accuracy")
    p.add_argument("--latency-n", type=int, default=100, help="single-review calls timed for latency")
    p.add_argument("--batch-size", type=int, help="texts per forward pass (default 32)")
    p.add_argument(
        "--backends", help="comma-separated subset of torch,torch-bf16,onnx,onnx-int8 (default: all available)"
    )
    p.add_argument("--long-text", choices=LONG_TEXT_MODES, help="truncate or chunk (default: the model's own)")
    p.add_argument("--data", help="IMDb folder (default: IMDB_DIR)")
    p.add_argument("--out", help="JSON results file (default: RUN_DIR/bench.json, or MODEL_DIR/bench.json)")
    p.add_argument("--threads", type=int, help="intra-op threads for every backend (default: torch's count)")

    p = sub.add_parser(
        "push",
        help="upload a run's model (weights, tokenizer, card, sidecar) to the Hugging Face Hub in one commit",
        description="Upload RUN_DIR/model/ (safetensors, tokenizer, README.md model card, sentiment_lab.json) and "
        "optionally report.html and the ONNX export to a Hub model repository, as one commit: either every file "
        "lands or none. Needs a token (`hf auth login` or HF_TOKEN); --dry-run lists the files and prints the card "
        "without touching the network.",
    )
    p.add_argument("run_dir", metavar="RUN_OR_MODEL_DIR")
    p.add_argument("--repo-id", required=True, help="Hub repository, USER/NAME or ORG/NAME (created when missing)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--report", action="store_true", help="also upload RUN_DIR/report.html (`sentiment-lab report`)")
    p.add_argument(
        "--onnx", action="store_true", help="also upload the ONNX export, model/onnx/ (`sentiment-lab export`)"
    )
    p.add_argument("--message", help="commit message (default: names the run and its test accuracy)")
    p.add_argument("--dry-run", action="store_true", help="print the files (paths, sizes) and the card; upload nothing")


def add_experiments_parsers(sub: argparse._SubParsersAction) -> None:
    """Register sweep and tune."""
    p = sub.add_parser("sweep", help="train every variant x seed of a sweep file (skips finished runs, resumes others)")
    p.add_argument("sweep_file", metavar="SWEEP.yaml", help="sweep file, e.g. sweeps/ablation-lr.yaml")
    p.add_argument("--quick", action="store_true", help="use the file's quick mode (MiniLM, small subsets, CPU)")
    p.add_argument("--out", help="sweep folder (default: runs/sweeps/<name>[-quick])")
    add_override_args(p, " in every run")
    p.add_argument("--dry-run", action="store_true", help="validate the sweep and list its runs; train nothing")

    p = sub.add_parser("tune", help="Optuna hyperparameter search (objective: validation F1) over a YAML space")
    add_config_args(p)
    p.add_argument("--trials", type=int, required=True, help="total finished trials the study should reach")
    p.add_argument("--space", help="search-space YAML (default: the built-in space, see sweeps/tune-space.yaml)")
    p.add_argument("--out", help="tune folder (default: runs/tune/<config name>)")
    p.add_argument(
        "--storage",
        help="Optuna RDB URL shared by all workers (default: sqlite:///OUT/study.db), e.g. postgresql://...",
    )
    p.add_argument("--study-name", help="study name in the storage (default: the config's name)")
    p.add_argument("--seed", type=int, help="sampler seed (leave unset when several workers share a study)")


def add_analysis_parsers(sub: argparse._SubParsersAction) -> None:
    """Register report, explain and compare."""
    p = sub.add_parser("report", help="HTML study report of a run: data, training, metrics, calibration, errors")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--explanations", type=int, default=6, help="reviews explained with integrated gradients (0: none)")
    p.add_argument("--ig-steps", type=int, default=20, help="integrated-gradients steps per review")
    p.add_argument("--target-accuracy", type=float, default=0.97, help="accuracy the abstention threshold must reach")
    p.add_argument(
        "--no-store",
        action="store_true",
        help="do not write temperature/threshold into RUN_DIR/model/sentiment_lab.json",
    )
    p.add_argument("--no-label-noise", action="store_true", help="skip confident learning on the train split")

    p = sub.add_parser("explain", help="token attributions and [CLS] attention for texts (HTML + PNG)")
    p.add_argument("model", metavar="MODEL_OR_RUN_DIR")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("--out", default="explanations", help="output folder (default: ./explanations)")
    p.add_argument("--ig-steps", type=int, default=20, help="integrated-gradients steps")
    p.add_argument(
        "--target", help="class to explain, by name or id (default: each text's predicted class)", default=None
    )

    p = sub.add_parser("compare", help="compare runs on the same test set: CIs, McNemar, paired bootstrap")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="output folder (default: <parent of the first run>/comparison)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")


def add_ensemble_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ensemble."""
    p = sub.add_parser(
        "ensemble",
        help="average finished runs' calibrated probabilities into a run-like folder (predict, serve, evaluate, "
        "report and compare take it)",
        description="Make OUT, an ensemble of finished training runs: its predictions are the weighted mean of the "
        "members' calibrated probabilities, softmax(logits / T) with each member's stored temperature T (1 when "
        "uncalibrated; `sentiment-lab report` calibrates a run). The members must share their classes and their "
        "test items (same ids, same order); a difference is refused, naming the member. OUT holds ensemble.json "
        "(members, weights, temperatures, fingerprints of their model files), predictions.parquet, "
        "val_predictions.parquet, metrics.json (the ensemble's metrics next to every member's, McNemar's test "
        "against the best member) and config.yaml (the first member's). A member changed or deleted afterwards "
        "makes predict, serve and evaluate refuse the ensemble.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished training runs (at least two)")
    p.add_argument("--out", required=True, help="the ensemble folder to write (e.g. runs/ensemble)")
    p.add_argument(
        "--weights",
        nargs="+",
        type=float,
        metavar="W",
        help="one positive weight per RUN_DIR, in their order (normalised to sum 1; default equal)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier ensemble in --out (only an ensemble)")


def add_serve_parsers(sub: argparse._SubParsersAction) -> None:
    """Register serve."""
    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP: REST API, web page, Prometheus metrics",
        description="Serve MODEL_DIR with FastAPI + uvicorn: POST /v1/predict, POST /v1/explain, GET /v1/model, "
        "/healthz, /readyz, /metrics, API docs at /docs and a web page at /. Concurrent requests are batched "
        "into one forward pass. Stop with Ctrl+C or SIGTERM: requests in flight finish first.",
    )
    p.add_argument("model", metavar="MODEL_OR_RUN_DIR", help="a run, model or ensemble folder")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed at start)")
    p.add_argument(
        "--api-key",
        help="require this key on /v1/* (X-API-Key or Authorization: Bearer); prefer the SENTIMENT_LAB_API_KEY "
        "environment variable, which other users cannot read from the process list",
    )
    p.add_argument(
        "--allow-public", action="store_true", help="allow a non-loopback --host without an API key (open to all)"
    )
    add_predictor_args(p)
    p.add_argument("--no-explain", action="store_true", help="disable POST /v1/explain and the page's highlights")
    g = p.add_argument_group("batching and limits")
    g.add_argument("--max-batch-size", type=int, help="texts per micro-batch (default 32)")
    g.add_argument("--max-wait-ms", type=float, help="how long a micro-batch waits for more requests (default 5)")
    g.add_argument("--max-queue", type=int, help="texts waiting at once; beyond it 503 + Retry-After (default 1024)")
    g.add_argument("--timeout", dest="request_timeout_s", type=float, help="per-request timeout, s (default 30)")
    g.add_argument("--max-body-bytes", type=int, help="request body limit, 413 beyond it (default 1048576)")
    g.add_argument("--max-texts", type=int, help="texts per request, 422 beyond it (default 64)")
    g.add_argument("--max-chars", type=int, help="characters per text, 422 beyond it (default 20000)")
    g.add_argument("--graceful-timeout", type=int, default=30, help="seconds in-flight requests get at shutdown")
    g.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))


SELECT_STRATEGIES = ("uncertainty", "margin", "entropy", "balanced", "random", "diverse")  # selection.STRATEGIES


def add_selection_parsers(sub: argparse._SubParsersAction) -> None:
    """Register select (active learning)."""
    p = sub.add_parser(
        "select",
        help="active learning: the N pool texts most worth labelling next, as a CSV/Parquet for a labelling tool",
        description="Score every text of an unlabelled pool file with RUN_DIR's model and write the N most worth "
        "labelling to --out (.csv or .parquet): rank, id, text, an empty label column to fill in, predicted_label, "
        "probability (top), score (the strategy's), strategy and reason. Filled in, the file is a training file "
        "(data.train_file). Strategies: uncertainty (least confident, 1 - top probability), margin (smallest "
        "top1 - top2), entropy, balanced (least confident, shared evenly among the predicted classes), random "
        "(seeded), diverse (k-means of the model's encoder vectors over the 5N least "
        "confident texts, the text nearest each centre; an ensemble uses its first member's encoder). Pool texts "
        "already in the run's training data are counted in a warning; a pool of N texts or fewer is returned whole.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run (or ensemble) folder")
    p.add_argument("--pool", required=True, help="unlabelled texts: a CSV, JSONL or Parquet file")
    p.add_argument("--n", type=int, required=True, help="how many texts to select")
    p.add_argument("--strategy", choices=SELECT_STRATEGIES, default="uncertainty", help="default: uncertainty")
    p.add_argument("--out", required=True, help="the selection file to write (.csv or .parquet)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--seed", type=int, default=0, help="seed of random and of diverse's k-means (default 0)")
    p.add_argument("--text-column", default="text", help="the pool's column of texts (default: text)")
    p.add_argument("--id-column", help="the pool's column of ids (default: id when present, else the row number)")
    p.add_argument(
        "--exclude-train", action="store_true", help="drop pool texts already in the run's training data (id or text)"
    )
    p.add_argument("--candidates", type=int, default=5, help="diverse: cluster the candidates x N least confident")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")


def add_distill_parsers(sub: argparse._SubParsersAction) -> None:
    """Register distill."""
    p = sub.add_parser(
        "distill",
        help="train a smaller student on a teacher's logits (a run, model or ensemble folder) into a run folder",
        description="Train a student as configured in CONFIG's distill: section (docs/compression.md): by default "
        "the teacher's own architecture with distill.layers of its layers (layer-drop initialisation), optionally "
        "with the vocabulary pruned to the training texts' tokens (distill.prune_vocab). The loss is alpha * "
        "cross-entropy on the labels + (1 - alpha) * T^2 * KL to the teacher's logits, which are computed once and "
        "cached in OUT (recomputed on resume when the teacher or the texts changed); distill.unlabeled adds texts "
        "for the soft loss, without those of the validation and test splits. OUT is an ordinary run folder.",
    )
    p.add_argument("teacher", metavar="TEACHER", help="the teacher: a run, model or ensemble folder")
    p.add_argument(
        "--config", required=True, help="experiment YAML with a distill: section (e.g. configs/distill-minilm-l3.yaml)"
    )
    add_override_args(p)
    p.add_argument("--out", required=True, help="the student's run folder (e.g. runs/distill-l3)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")


def add_pretrain_parsers(sub: argparse._SubParsersAction) -> None:
    """Register pretrain."""
    p = sub.add_parser(
        "pretrain",
        help="masked-LM pre-training of model.name on unlabelled texts, into a folder that train takes as model.name",
        description="Adapt CONFIG's model.name to the domain by masked-LM pre-training (docs/pretraining.md) on the "
        "files of its pretrain: section and the data section's training texts. Every text that occurs in the data's "
        "validation or test split (or in pretrain.exclude) is dropped first and counted. OUT holds config.yaml, "
        "train.log, history.csv, model/ and metrics.json (last); fine-tune from it with --set model.name=OUT/model. "
        "Killed mid-way, it resumes from its newest checkpoint with --set training.resume=true.",
    )
    p.add_argument(
        "--config", required=True, help="experiment YAML with a pretrain: section (configs/pretrain-imdb.yaml)"
    )
    add_override_args(p)
    p.add_argument("--out", required=True, help="the output folder (e.g. runs/pretrain-imdb)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished pre-training run in --out")


def add_all_parsers(sub: argparse._SubParsersAction) -> None:
    """Every command's parser, and SECTION_OF filled in from the names each section registered."""
    for section, add in (
        ("core", add_core_parsers),
        ("deploy", add_deploy_parsers),
        ("experiments", add_experiments_parsers),
        ("analysis", add_analysis_parsers),
        ("ensemble", add_ensemble_parsers),
        ("serve", add_serve_parsers),
        ("distill", add_distill_parsers),
        ("pretrain", add_pretrain_parsers),
        ("selection", add_selection_parsers),
    ):
        before = set(sub.choices)
        add(sub)
        SECTION_OF.update(dict.fromkeys(set(sub.choices) - before, section))
