"""`push`: the plan (files, sizes, card) with no network, one commit when it works, one error and no success when it
does not. Every Hub call is monkeypatched: nothing here touches the network."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import HfApi

from sentiment_lab import push
from sentiment_lab.cli import main
from sentiment_lab.errors import ConfigError, ModelError
from sentiment_lab.push import check_card, check_repo_id, plan_push


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Records every HfApi call; each fails the test unless a test replaces it."""
    calls: list[tuple[str, Any]] = []

    def refuse(name: str):
        def call(self: HfApi, *args: Any, **kwargs: Any) -> Any:
            calls.append((name, args))
            raise AssertionError(f"HfApi.{name} must not be called here")

        return call

    for name in ("create_repo", "create_commit", "upload_folder", "upload_file", "whoami"):
        monkeypatch.setattr(HfApi, name, refuse(name))
    monkeypatch.setattr(push, "get_token", lambda: calls.append(("get_token", ())) or None)
    return calls


def _one_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "pushed" not in captured.out  # nothing reports success
    return err[0]


def test_dry_run_lists_files_and_card_without_network(tiny_run_dir: Path, hub, capsys) -> None:
    assert main(["push", str(tiny_run_dir), "--repo-id", "alice/imdb-tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for name in ("README.md", "config.json", "model.safetensors", "sentiment_lab.json", "tokenizer.json"):
        assert name in out
    assert "would be committed to public repo alice/imdb-tiny; nothing was uploaded" in out
    assert "model-index:" in out and "datasets:" in out  # the card follows the file table
    assert hub == []  # not even a token look-up


def test_plan_checks_the_card_and_never_ships_pickles(tiny_run_dir: Path, tmp_path: Path) -> None:
    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    (run / "model" / "training_args.bin").write_bytes(b"pickle")
    (run / "model" / "README.md").unlink()  # rebuilt from config.yaml and metrics.json
    plan = plan_push(run, "alice/imdb-tiny")
    names = [f.path_in_repo for f in plan.files]
    assert names[0] == "README.md" and "training_args.bin" not in names and "model.safetensors" in names
    assert plan.files[0].local is None and "model-index" in plan.card
    assert plan.total_bytes == sum(f.size for f in plan.files) > 0
    with pytest.raises(ModelError, match="no ONNX export"):
        plan_push(run, "alice/imdb-tiny", include_onnx=True)
    with pytest.raises(Exception, match="report.html"):
        plan_push(run, "alice/imdb-tiny", include_report=True)
    (run / "report.html").write_text("<html></html>")
    assert plan_push(run, "alice/imdb-tiny", include_report=True).files[-1].path_in_repo == "report.html"


def test_bad_cards_are_named() -> None:
    with pytest.raises(ModelError, match="base_model '/home/me/minilm' is not a Hub id"):
        check_card("---\nbase_model: /home/me/minilm\nlicense: mit\n---\n# card\n")
    with pytest.raises(ModelError, match="no metadata"):
        check_card("# a card without front matter\n")
    with pytest.raises(ModelError, match="invalid metadata"):
        check_card("---\nlicense: [unclosed\n---\n# card\n")


@pytest.mark.parametrize("repo_id", ["alice/bad name", "a/b/c", "alice/--x", ""])
def test_bad_repo_id_is_one_error(tiny_run_dir: Path, hub, capsys, repo_id: str) -> None:
    line = _one_error(capsys, ["push", str(tiny_run_dir), "--repo-id", repo_id, "--dry-run"])
    assert "invalid --repo-id" in line
    with pytest.raises(ConfigError):
        check_repo_id(repo_id)


def test_push_without_a_token_is_one_error_and_uploads_nothing(tiny_run_dir: Path, hub, capsys) -> None:
    line = _one_error(capsys, ["push", str(tiny_run_dir), "--repo-id", "alice/imdb-tiny"])
    assert "no Hugging Face token" in line and "hf auth login" in line
    assert [name for name, _ in hub] == ["get_token"]


def test_a_failed_upload_reports_no_success(tiny_run_dir: Path, hub, monkeypatch, capsys) -> None:
    monkeypatch.setattr(push, "get_token", lambda: "hf_test_token")
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: None)

    def offline(self: HfApi, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(HfApi, "create_commit", offline)
    line = _one_error(capsys, ["push", str(tiny_run_dir), "--repo-id", "alice/imdb-tiny"])
    assert "push to alice/imdb-tiny failed (ConnectionError" in line and "nothing was committed" in line


def test_push_is_one_commit_of_every_planned_file(tiny_run_dir: Path, hub, monkeypatch, capsys) -> None:
    monkeypatch.setattr(push, "get_token", lambda: "hf_test_token")
    seen: dict[str, Any] = {}

    def create_repo(self: HfApi, repo_id: str, **kwargs: Any) -> None:
        seen["repo"] = (repo_id, kwargs)

    def create_commit(self: HfApi, repo_id: str, operations: Any, **kwargs: Any) -> Any:
        seen.setdefault("commits", []).append([op.path_in_repo for op in operations])
        seen["message"] = kwargs["commit_message"]
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc", "oid": "abc"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    assert main(["push", str(tiny_run_dir), "--repo-id", "alice/imdb-tiny", "--private"]) == 0
    assert seen["repo"] == ("alice/imdb-tiny", {"private": True, "repo_type": "model", "exist_ok": True})
    planned = [f.path_in_repo for f in plan_push(tiny_run_dir, "alice/imdb-tiny").files]
    assert seen["commits"] == [planned]  # one commit, all files
    assert "test accuracy" in seen["message"]
    assert "pushed" in capsys.readouterr().out
