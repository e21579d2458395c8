"""Push a trained model to the Hugging Face Hub: RUN_DIR/model/ (and optionally report.html and the ONNX export)
as one commit of a model repository.

What is uploaded is planned first (`plan_push`) and can be printed without any network (`push_run(dry_run=True)`):
the model folder's safetensors weights, config and tokenizer files, the model card README.md (the run's own, built
by `sentiment_lab.model_card` at training; rebuilt from config.yaml and metrics.json when missing) and the sidecar
sentiment_lab.json. Pickle files (.bin, .pt, .pkl) are never uploaded. The card's metadata is checked locally
before anything is sent (`check_card`): YAML front matter, Hub ids for `base_model` and `datasets`, a `model-index`
that parses. The upload is `HfApi.create_repo` plus one `create_commit` of every file, so either the whole model
lands or nothing does; a failure is one error that says so, never a partial success.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, get_token
from huggingface_hub.utils import HFValidationError, validate_repo_id

from sentiment_lab.errors import ConfigError, ModelError, RunDirError, SentimentLabError
from sentiment_lab.model_card import build_model_card
from sentiment_lab.rundir import ADAPTER_DIR, FINISHED_MARKER, ONNX_DIR, locate_model, read_run_config

CARD_FILE = "README.md"
REPORT_FILE = "report.html"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
SKIPPED_SUFFIXES = (".tmp", ".lock")


class PushError(SentimentLabError):
    """The upload to the Hub failed (no token, no network, refused); nothing was committed."""


@dataclass(frozen=True)
class UploadFile:
    """One file of the commit: where it goes in the repository and where it comes from."""

    path_in_repo: str
    size: int
    local: Path | None = None  # None: generated in memory (a card rebuilt from the run)
    content: bytes | None = None

    def describe(self) -> dict[str, Any]:
        """The file as plain values, for the CLI and JSON."""
        source = str(self.local) if self.local else "(model card built from config.yaml and metrics.json)"
        return {"path_in_repo": self.path_in_repo, "bytes": self.size, "from": source}


@dataclass(frozen=True)
class PushPlan:
    """Everything a push would upload, and the model card among it."""

    repo_id: str
    model_dir: Path
    run_dir: Path | None
    files: list[UploadFile]
    card: str

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def check_repo_id(repo_id: str) -> str:
    """The repo id, or ConfigError naming the rule it breaks (`huggingface_hub.utils.validate_repo_id`)."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ConfigError(f"invalid --repo-id {repo_id!r}: {exc} Use USER/NAME, e.g. alice/imdb-minilm") from None
    return repo_id


def check_card(text: str, source: str = CARD_FILE) -> ModelCard:
    """The parsed model card, or ModelError listing what the Hub would reject in its metadata (checked locally)."""
    try:
        card = ModelCard(text, ignore_metadata_errors=False)
    except (ValueError, TypeError, yaml.YAMLError) as exc:  # bad YAML, a model-index that does not parse
        raise ModelError(f"model card {source} has invalid metadata: {exc}") from None
    data = card.data.to_dict()
    if not data:
        raise ModelError(f"model card {source} has no metadata (YAML front matter between --- lines)")
    problems = []
    for key in ("base_model", "datasets"):
        values = data.get(key) or []
        for value in [values] if isinstance(values, str) else values:
            try:
                validate_repo_id(str(value))
            except HFValidationError:
                problems.append(f"{key} {value!r} is not a Hub id (a local path or alias is refused by the Hub)")
    if "model-index" in data and not card.data.eval_results:
        problems.append("model-index holds no results")
    if problems:
        raise ModelError(f"model card {source}: " + "; ".join(problems))
    return card


def _pushable(p: Path) -> bool:
    """A file of a model folder that may go to the Hub: not hidden, never a pickle."""
    return p.is_file() and not p.name.startswith(".") and not p.name.endswith(PICKLE_SUFFIXES)


def _model_files(model_dir: Path) -> list[UploadFile]:
    files = [p for p in sorted(model_dir.iterdir()) if _pushable(p) and not p.name.endswith(SKIPPED_SUFFIXES)]
    names = {p.name for p in files}
    if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
        raise ModelError(
            f"{model_dir} has no config.json and safetensors weights to push (pickle .bin weights are never pushed); "
            "give a folder written by `sentiment-lab train`"
        )
    return [UploadFile(p.name, p.stat().st_size, p) for p in files]


def _card_file(model_dir: Path, run_dir: Path | None) -> UploadFile:
    """The model card: the model folder's README.md, else one built from the run's config.yaml and metrics.json."""
    card_path = model_dir / CARD_FILE
    if card_path.is_file():
        check_card(card_path.read_text(encoding="utf-8"), str(card_path))
        return UploadFile(CARD_FILE, card_path.stat().st_size, card_path)
    if run_dir is None or not (run_dir / FINISHED_MARKER).is_file():
        raise ModelError(
            f"{model_dir} has no model card ({CARD_FILE}) and no finished run folder around it to build one from; "
            "push a run folder written by `sentiment-lab train`"
        )
    metrics = json.loads((run_dir / FINISHED_MARKER).read_text(encoding="utf-8"))
    text = str(build_model_card(read_run_config(run_dir), metrics))
    check_card(text, f"{CARD_FILE} built from {run_dir}")
    content = text.encode("utf-8")
    return UploadFile(CARD_FILE, len(content), None, content)


def _subfolder_files(model_dir: Path, name: str) -> list[UploadFile]:
    """The files of model_dir/name (none when it is missing), as name/FILE in the repository; never a pickle."""
    folder = model_dir / name
    found = sorted(folder.iterdir()) if folder.is_dir() else []
    return [UploadFile(f"{name}/{p.name}", p.stat().st_size, p) for p in found if _pushable(p)]


def plan_push(
    run_or_model_dir: str | Path, repo_id: str, include_report: bool = False, include_onnx: bool = False
) -> PushPlan:
    """What a push would upload, checked: the repo id, the model files, the card's metadata, the optional extras."""
    check_repo_id(repo_id)
    model_dir, run_dir = locate_model(run_or_model_dir)
    files = [f for f in _model_files(model_dir) if f.path_in_repo != CARD_FILE]
    card = _card_file(model_dir, run_dir)
    files.insert(0, card)
    # a LoRA run's adapter alone (peft's format, the head included; about 1% of the model): PeftModel.from_pretrained(
    # base, repo_id, subfolder="adapter") loads it
    files += _subfolder_files(model_dir, ADAPTER_DIR)
    if include_onnx:
        exported = _subfolder_files(model_dir, ONNX_DIR)
        if not exported:
            raise ModelError(
                f"no ONNX export in {model_dir / ONNX_DIR}; run `sentiment-lab export {run_or_model_dir} --onnx` first"
            )
        files += exported
    if include_report:
        report = run_dir / REPORT_FILE if run_dir else None
        if report is None or not report.is_file():
            raise RunDirError(
                f"no {REPORT_FILE} in {run_dir or run_or_model_dir}; write it with `sentiment-lab report RUN_DIR` "
                "(a plain model folder has no report)"
            )
        files.append(UploadFile(REPORT_FILE, report.stat().st_size, report))
    text = card.content.decode("utf-8") if card.content else card.local.read_text(encoding="utf-8")  # type: ignore[union-attr]
    return PushPlan(repo_id, model_dir, run_dir, files, text)


def _default_message(plan: PushPlan) -> str:
    name = (plan.run_dir or plan.model_dir).name
    try:
        accuracy = json.loads((plan.run_dir / FINISHED_MARKER).read_text(encoding="utf-8"))["test"]["accuracy"]  # type: ignore[operator]
        return f"Upload {name} (test accuracy {accuracy:.4f}) with sentiment-lab"
    except (OSError, TypeError, KeyError, ValueError):
        return f"Upload {name} with sentiment-lab"


def push_run(
    run_or_model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    include_report: bool = False,
    include_onnx: bool = False,
    dry_run: bool = False,
    message: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """Upload a run's model folder to the Hub repository `repo_id` in one commit; returns what was (or would be) sent.

    dry_run: plan and check only; no network. token: default the logged-in one (`hf auth login` or HF_TOKEN).
    Raises PushError when there is no token or the Hub refuses or cannot be reached; nothing is committed then.
    """
    plan = plan_push(run_or_model_dir, repo_id, include_report, include_onnx)
    result: dict[str, Any] = {
        "repo_id": repo_id,
        "private": private,
        "dry_run": dry_run,
        "files": [f.describe() for f in plan.files],
        "bytes": plan.total_bytes,
        "card": plan.card,
        "url": None,
        "commit": None,
    }
    if dry_run:
        return result
    token = token or get_token()
    if not token:
        raise PushError(
            "no Hugging Face token: log in with `hf auth login` or set HF_TOKEN (a token with write access); "
            "nothing was uploaded"
        )
    api = HfApi(token=token)
    operations = [
        CommitOperationAdd(f.path_in_repo, f.content if f.content is not None else str(f.local)) for f in plan.files
    ]
    try:
        api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        commit = api.create_commit(
            repo_id, operations, commit_message=message or _default_message(plan), repo_type="model"
        )
    except Exception as exc:  # httpx, HfHubHTTPError (401/403/404), offline mode, OS errors: all mean "not pushed"
        first = (str(exc).strip().splitlines() or [""])[0]
        raise PushError(
            f"push to {repo_id} failed ({type(exc).__name__}: {first}); nothing was committed (the upload is one "
            "commit). Check the token's write access (`hf auth whoami`) and the network, then push again"
        ) from None
    result["url"] = commit.commit_url
    result["commit"] = commit.oid
    return result
